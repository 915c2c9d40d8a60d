"""Marshmallow schemas: they validate requests and are the source of the OpenAPI document.

Field errors are stable codes, not prose: `required`, `type` (wrong JSON type, answered 400),
`too_long`; services add their own (`invalid`, password rule codes...).
"""

from __future__ import annotations

from typing import Any

from flask_smorest.fields import Upload
from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

FIELD_CODES = {"required": "required", "null": "required", "invalid": "type", "invalid_utf8": "type"}


def text(*, max_length: int = 255, **kwargs: Any) -> fields.String:
    return fields.String(
        error_messages=FIELD_CODES, validate=validate.Length(max=max_length, error="too_long"), **kwargs
    )


def flag(**kwargs: Any) -> fields.Boolean:
    return fields.Boolean(error_messages=FIELD_CODES, **kwargs)


class ApiSchema(Schema):
    """Unknown fields are ignored (clients may send more than we need); a body that is not an
    object is a malformed request."""

    class Meta:
        unknown = EXCLUDE

    error_messages = {"type": "type"}


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error under /api/v1 is answered. Extra members (such
    as `attempts_left`) are allowed, as the RFC says."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"description": "Stable machine-readable code"})
    detail = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Field name → list of stable codes"},
    )


class StatusSchema(ApiSchema):
    status = fields.String(required=True)


class RegistrationSchema(ApiSchema):
    email = text(required=True)
    password = text(required=True, max_length=1024)
    accept_terms = flag(required=True)


class TokenSchema(ApiSchema):
    token = text(required=True, max_length=512)


class SignInSchema(ApiSchema):
    username = text(required=True)
    password = text(required=True, max_length=1024)


class PasswordResetRequestSchema(ApiSchema):
    email = text(required=True)


class PasswordResetConfirmSchema(ApiSchema):
    token = text(required=True, max_length=512)
    password = text(required=True, max_length=1024)


class AddressSchema(ApiSchema):
    line1 = text(allow_none=True)
    line2 = text(allow_none=True)
    postal_code = text(allow_none=True, max_length=16)
    city = text(allow_none=True, max_length=128)
    province = text(allow_none=True, max_length=128)
    country = text(allow_none=True, max_length=2, metadata={"description": "ISO 3166-1 alpha-2"})


class ProfileSchema(ApiSchema):
    address = fields.Nested(AddressSchema, required=True)
    phone = fields.String(allow_none=True)
    phone_verified = fields.Boolean(
        required=True, metadata={"description": "The customer typed back an SMS code sent to `phone`"}
    )
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    tax_id = fields.String(
        allow_none=True, metadata={"description": "Declared NIF/NIE: evidence for matching, not a username"}
    )


class ProfileUpdateSchema(ApiSchema):
    address = fields.Nested(AddressSchema, error_messages=FIELD_CODES)
    phone = text(allow_none=True, max_length=32)
    first_name = text(allow_none=True, max_length=128)
    last_name = text(allow_none=True, max_length=128)
    tax_id = text(allow_none=True, max_length=32, metadata={"description": "NIF or NIE"})


class AssociationSchema(ApiSchema):
    status = fields.String(required=True, validate=validate.OneOf(["linked", "pending", "none"]))
    policyholder_name = fields.String(allow_none=True)


class AccountSchema(ApiSchema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    username = fields.String(required=True)
    email_verified = fields.Boolean(required=True)
    profile = fields.Nested(ProfileSchema, required=True)
    association = fields.Nested(AssociationSchema, required=True)


class PhoneCodeSentSchema(ApiSchema):
    status = fields.String(required=True, validate=validate.OneOf(["code_sent"]))
    phone_hint = fields.String(required=True)


class PhoneConfirmationSchema(ApiSchema):
    code = text(required=True, max_length=32)


class SessionSchema(ApiSchema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class VerifiedSessionSchema(SessionSchema):
    account = fields.Nested(AccountSchema, required=True)


class PolicySchema(ApiSchema):
    number = fields.String(required=True)
    product = fields.String(required=True)
    status = fields.String(required=True)
    coverage = fields.String(allow_none=True)


class PolicyListSchema(ApiSchema):
    items = fields.List(fields.Nested(PolicySchema), required=True)


class EcustomerStartSchema(ApiSchema):
    tax_id = text(required=True, max_length=32)
    email = text(required=True)
    phone = text(required=True, max_length=32)


class EcustomerRegistrationSchema(ApiSchema):
    id = fields.String(required=True)
    status = fields.String(required=True)
    phone_hint = fields.String(required=True)


class SignatureRequestSchema(ApiSchema):
    code = text(required=True, max_length=32)
    accept_contract = flag(required=True)


class SignedSchema(ApiSchema):
    status = fields.String(required=True)
    contract_id = fields.Integer(required=True)


class PasswordSchema(ApiSchema):
    password = text(required=True, max_length=1024)


class ActivatedSchema(ApiSchema):
    status = fields.String(required=True)
    username = fields.String(required=True)


class ContractSummarySchema(ApiSchema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    signed_at = fields.DateTime(required=True)
    sha256 = fields.String(required=True)


class ContractListSchema(ApiSchema):
    items = fields.List(fields.Nested(ContractSummarySchema), required=True)


class ApplicationFormSchema(ApiSchema):
    """Form fields of a representative application (multipart/form-data)."""

    company_tax_id = text(required=True, max_length=32)
    company_name = text(required=True)
    first_name = text(required=True, max_length=128)
    last_name = text(required=True, max_length=128)
    tax_id = text(required=True, max_length=32)
    email = text(required=True)
    phone = text(required=True, max_length=32)
    preferred_call_times = text(
        max_length=4096,
        metadata={
            "description": 'JSON list of {"weekday": 0-4, "from": "HH:MM", "to": "HH:MM"} inside the call window'
        },
    )


class ApplicationFilesSchema(ApiSchema):
    public_deed = Upload(metadata={"description": "PDF, JPEG or PNG, at most 10 MB"})
    power_of_attorney = Upload(metadata={"description": "PDF, JPEG or PNG, at most 10 MB"})
    tax_id_document = Upload(metadata={"description": "PDF, JPEG or PNG, at most 10 MB"})


class ApplicationSubmissionSchema(ApplicationFormSchema, ApplicationFilesSchema):
    """The whole multipart body of a new application: the fields and the three files."""


class ApplicationCreatedSchema(ApiSchema):
    id = fields.String(required=True)
    status = fields.String(required=True)
    access_key = fields.String(
        required=True, metadata={"description": "Shown once; needed to read or update"}
    )
    call_deadline = fields.String(required=True, metadata={"format": "date-time"})


class ApplicationDocumentSchema(ApiSchema):
    kind = fields.String(required=True)
    status = fields.String(required=True)
    reason = fields.String(allow_none=True)


class ApplicationViewSchema(ApiSchema):
    id = fields.String(required=True)
    status = fields.String(required=True)
    call_deadline = fields.DateTime(required=True)
    documents = fields.List(fields.Nested(ApplicationDocumentSchema), required=True)
    requested_documents = fields.List(fields.String(), required=True)


class ProviderTermsSchema(ApiSchema):
    version = fields.String(required=True)
    language = fields.String(required=True)
    text = fields.String(required=True)
    sha256 = fields.String(required=True, metadata={"description": "SHA-256 of the text as accepted"})


class CompletionViewSchema(ApiSchema):
    status = fields.String(required=True, validate=validate.OneOf(["invited", "pin_sent", "signed"]))
    provider_terms = fields.Nested(ProviderTermsSchema, required=True)
    fields_to_confirm = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "The details to type again; their values are never sent back"},
    )


class CompletionConfirmSchema(ApiSchema):
    company_tax_id = text(required=True, max_length=32)
    tax_id = text(required=True, max_length=32)
    email = text(required=True)
    phone = text(required=True, max_length=32)
    accept_provider_terms = flag(required=True)


class PinSentSchema(ApiSchema):
    status = fields.String(required=True)
    phone_hint = fields.String(required=True)


class CompletionSignatureSchema(ApiSchema):
    pin = text(required=True, max_length=32)
