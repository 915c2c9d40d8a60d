"""The local signing provider: PAdES signatures checked with pyHanko's own validator."""

from __future__ import annotations

import hashlib
import socket
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
import time_machine
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.timestamps import DummyTimeStamper, HTTPTimeStamper
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from backoffice.signing.contract import render_contract
from backoffice.signing.providers import (
    DEV_CERT_FILE,
    DEV_COMMON_NAME,
    DEV_PASSWORD_FILE,
    LocalPadesSigner,
    SignedPdf,
    SigningError,
    build_signer,
    ensure_development_certificate,
)

P12_PASSWORD = "correct horse battery staple"
SIGN_ARGS = {
    "signer_name": "María Núñez",
    "reason": "e-Customer service contract 2026.1",
    "location": "Spain",
}


@dataclass
class Issued:
    key: object
    cert: x509.Certificate

    @property
    def asn1(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))

    @property
    def asn1_key(self) -> asn1_keys.PrivateKeyInfo:
        return asn1_keys.PrivateKeyInfo.load(
            self.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{name: enabled.get(name, False) for name in names})


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    rsa_key: bool = False,
    extended_usage: list | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.COUNTRY_NAME, "ES")]
    )
    now = datetime.now(UTC)
    if ca:
        usage = _key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True)
    else:
        usage = _key_usage(digital_signature=True, content_commitment=True)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if extended_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended_usage), critical=True)
    return Issued(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))


def write_p12(path: Path, leaf: Issued, *, chain: list[Issued], password: str | None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"test-seal", leaf.key, leaf.cert, [c.cert for c in chain], encryption
        )
    )
    return path


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = issue("Ventanilla Test Root CA", ca=True)
    return {
        "root": root,
        "seal": issue("Test Insurer Electronic Seal", issuer=root),
        "tsa": issue(
            "Ventanilla Test TSA",
            issuer=root,
            rsa_key=True,
            extended_usage=[ExtendedKeyUsageOID.TIME_STAMPING],
        ),
        "other_root": issue("Somebody Else's Root CA", ca=True),
    }


@pytest.fixture
def p12_path(tmp_path: Path, pki) -> Path:
    return write_p12(tmp_path / "seal.p12", pki["seal"], chain=[pki["root"]], password=P12_PASSWORD)


@pytest.fixture(scope="module")
def contract() -> bytes:
    return render_contract(
        language="es", holder_name="María Núñez", tax_id="12345678Z", signing_date=date(2026, 3, 15)
    )


def validate(data: bytes, *trust_roots: asn1_x509.Certificate):
    reader = PdfFileReader(BytesIO(data))
    assert len(reader.embedded_signatures) == 1
    signature = reader.embedded_signatures[0]
    return signature, validate_pdf_signature(signature, ValidationContext(trust_roots=list(trust_roots)))


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pkcs12_signature_is_intact_valid_and_made_with_the_configured_certificate(p12_path, pki, contract):
    signer = build_signer(
        {"APP_ENV": "testing", "SIGNING_CERT_PATH": str(p12_path), "SIGNING_CERT_PASSWORD": P12_PASSWORD},
        "/nonexistent",
    )

    signed = signer.sign(contract, **SIGN_ARGS)

    assert signer.name == "local-pades"
    assert isinstance(signed, SignedPdf) and signed.timestamped is False
    assert signed.data.startswith(contract)  # an incremental update: the original bytes are kept
    signature, status = validate(signed.data, pki["root"].asn1)
    assert status.intact and status.valid and status.trusted
    assert status.bottom_line
    assert status.coverage.name == "ENTIRE_FILE"
    assert status.signing_cert.serial_number == pki["seal"].cert.serial_number
    assert status.signing_cert.subject == pki["seal"].asn1.subject
    assert status.md_algorithm == "sha256"
    assert status.timestamp_validity is None
    dictionary = signature.sig_object
    assert dictionary["/SubFilter"] == "/ETSI.CAdES.detached"  # PAdES
    assert signature.field_name == "Signature1"
    assert str(dictionary["/Name"]) == "María Núñez"
    assert str(dictionary["/Reason"]) == SIGN_ARGS["reason"]
    assert str(dictionary["/Location"]) == "Spain"
    # The unsigned contract's hash (kept as evidence) still identifies the signed file's first revision.
    assert hashlib.sha256(signed.data[: len(contract)]).hexdigest() == hashlib.sha256(contract).hexdigest()


def test_a_signature_from_an_untrusted_root_is_intact_but_not_trusted(p12_path, pki, contract):
    signed = LocalPadesSigner(p12_path, P12_PASSWORD).sign(contract, **SIGN_ARGS)

    _, status = validate(signed.data, pki["other_root"].asn1)

    assert status.intact and status.valid
    assert not status.trusted
    assert not status.bottom_line


def test_changing_one_byte_after_signing_breaks_the_signature(p12_path, pki, contract):
    signed = LocalPadesSigner(p12_path, P12_PASSWORD).sign(contract, **SIGN_ARGS).data
    position = signed.index(b"%", 1) + 1  # the binary comment on the second line: covered, not parsed
    tampered = signed[:position] + bytes([signed[position] ^ 0x01]) + signed[position + 1 :]

    _, status = validate(tampered, pki["root"].asn1)

    assert not status.intact
    assert not status.bottom_line


def test_pkcs12_without_password_loads(tmp_path, pki, contract):
    path = write_p12(tmp_path / "open.p12", pki["seal"], chain=[], password=None)

    signed = LocalPadesSigner(path, None).sign(contract, **SIGN_ARGS)

    assert validate(signed.data, pki["root"].asn1)[1].bottom_line


def test_wrong_password_missing_file_and_garbage_are_signing_errors(tmp_path, p12_path, contract):
    with pytest.raises(SigningError, match="wrong password"):
        LocalPadesSigner(p12_path, "not the password").check()
    with pytest.raises(SigningError, match="cannot read"):
        LocalPadesSigner(tmp_path / "missing.p12", P12_PASSWORD).sign(contract, **SIGN_ARGS)
    garbage = tmp_path / "garbage.p12"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(SigningError):
        LocalPadesSigner(garbage, None).sign(contract, **SIGN_ARGS)
    LocalPadesSigner(p12_path, P12_PASSWORD).check()


def test_the_certificate_is_read_on_first_use_not_at_start_up(tmp_path, pki, contract):
    path = tmp_path / "later.p12"
    path.write_bytes(b"not yet")
    signer = build_signer({"APP_ENV": "production", "SIGNING_CERT_PATH": str(path)}, str(tmp_path))
    with pytest.raises(SigningError):
        signer.check()

    write_p12(path, pki["seal"], chain=[], password=None)  # replaced in place: read again

    signer.check()
    assert signer.certificate.serial_number == pki["seal"].cert.serial_number
    assert not (tmp_path / DEV_CERT_FILE).exists()


def test_input_that_is_not_a_pdf_is_a_signing_error(p12_path):
    with pytest.raises(SigningError):
        LocalPadesSigner(p12_path, P12_PASSWORD).sign(b"hello, not a PDF", **SIGN_ARGS)


def test_an_expired_certificate_refuses_to_sign(tmp_path, pki, contract):
    now = datetime.now(UTC)
    expired = issue(
        "Expired seal",
        issuer=pki["root"],
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    signer = LocalPadesSigner(write_p12(tmp_path / "expired.p12", expired, chain=[], password=None), None)

    with pytest.raises(SigningError, match="not valid now"):
        signer.sign(contract, **SIGN_ARGS)


def test_with_a_timestamp_authority_the_signature_carries_a_validated_timestamp(p12_path, pki, contract):
    tsa = pki["tsa"]
    timestamper = DummyTimeStamper(tsa_cert=tsa.asn1, tsa_key=tsa.asn1_key, certs_to_embed=[pki["root"].asn1])
    signer = LocalPadesSigner(p12_path, P12_PASSWORD, timestamper=timestamper)
    before = datetime.now(UTC)

    signed = signer.sign(contract, **SIGN_ARGS)

    assert signed.timestamped is True
    assert signed.data.startswith(contract)
    _, status = validate(signed.data, pki["root"].asn1)
    assert status.bottom_line
    timestamp = status.timestamp_validity
    assert timestamp is not None
    assert timestamp.intact and timestamp.valid and timestamp.trusted
    assert timestamp.signing_cert.serial_number == tsa.cert.serial_number
    assert before - timedelta(seconds=1) <= timestamp.timestamp <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_timestamp_authority_that_refuses_connections_is_a_signing_error(p12_path, contract):
    url = f"http://127.0.0.1:{closed_loopback_port()}/tsa"
    signer = build_signer(
        {
            "APP_ENV": "testing",
            "SIGNING_CERT_PATH": str(p12_path),
            "SIGNING_CERT_PASSWORD": P12_PASSWORD,
            "SIGNING_TSA_URL": url,
        },
        "/nonexistent",
    )
    assert isinstance(signer.timestamper, HTTPTimeStamper)
    assert signer.timestamper.url == url

    with pytest.raises(SigningError):
        signer.sign(contract, **SIGN_ARGS)


def test_development_certificate_is_generated_once_and_reused(tmp_path, contract):
    instance = tmp_path / "instance"

    path, password = ensure_development_certificate(str(instance))
    first_bytes = Path(path).read_bytes()
    again = ensure_development_certificate(str(instance))

    assert Path(path) == instance / DEV_CERT_FILE
    assert again == (path, password)
    assert Path(path).read_bytes() == first_bytes
    for name in (DEV_CERT_FILE, DEV_PASSWORD_FILE):
        assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600
    assert (instance / DEV_PASSWORD_FILE).read_bytes().strip() == password
    assert len(password) >= 32

    _, certificate, _ = pkcs12.load_key_and_certificates(first_bytes, password)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEV_COMMON_NAME
    assert certificate.issuer == certificate.subject
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    now = datetime.now(UTC)
    assert (
        now + timedelta(days=5 * 365 - 1) <= certificate.not_valid_after_utc <= now + timedelta(days=5 * 365)
    )

    first = build_signer({"APP_ENV": "development"}, str(instance))
    second = build_signer({"APP_ENV": "testing", "SIGNING_CERT_PATH": None}, str(instance))
    assert first.certificate.dump() == second.certificate.dump()
    assert first.certificate.serial_number == certificate.serial_number

    signed = second.sign(contract, **SIGN_ARGS)
    _, status = validate(signed.data, first.certificate)
    assert status.bottom_line
    assert status.signing_cert.serial_number == certificate.serial_number


def test_a_development_certificate_still_signs_with_the_clock_set_back_a_year(tmp_path, contract):
    """Tests freeze the clock at fixed dates; the certificate may have been made after them."""
    instance = tmp_path / "instance"
    ensure_development_certificate(str(instance))
    signer = build_signer({"APP_ENV": "development"}, str(instance))

    with time_machine.travel(datetime.now(UTC) - timedelta(days=365)):
        signed = signer.sign(contract, **SIGN_ARGS)

    _, status = validate(signed.data, signer.certificate)
    assert status.intact


def test_production_without_a_certificate_does_not_fall_back_to_a_development_one(tmp_path):
    with pytest.raises(SigningError, match="SIGNING_CERT_PATH"):
        build_signer({"APP_ENV": "production", "SIGNING_CERT_PATH": None}, str(tmp_path))
    assert not (tmp_path / DEV_CERT_FILE).exists()


def test_the_app_has_the_local_signer(app):
    signer = app.extensions["signer"]

    assert signer.name == "local-pades"
    assert signer.timestamper is None
