"""The signing port: a contract PDF in, the same PDF with a PAdES signature out.

The local provider signs with pyHanko using the organisation's PKCS#12 (`SIGNING_CERT_PATH`,
`SIGNING_CERT_PASSWORD`); in development and tests a self-signed certificate is generated
once into `instance/`. With `SIGNING_TSA_URL` the signature also carries an RFC 3161
timestamp from that authority (PAdES B-T). Such a signature proves that the bytes have not
changed since signing; it is trusted by readers only when the certificate comes from a CA they
trust and the timestamp from a real timestamp authority.

The signature is an incremental update: the signed file starts with the unsigned bytes
unchanged, so the hash of the contract shown to the customer still identifies what was signed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.timestamps import HTTPTimeStamper, TimeStamper

log = logging.getLogger(__name__)

DEV_CERT_FILE = "signing-dev.p12"
DEV_PASSWORD_FILE = "signing-dev.password"  # noqa: S105 (a file name)
DEV_LOCK_FILE = "signing-dev.lock"
DEV_COMMON_NAME = "Ventanilla development signing"
DEV_VALIDITY = timedelta(days=5 * 365)
TSA_TIMEOUT_SECONDS = 10
SIGNATURE_FIELD = "Signature1"


class SigningError(Exception):
    """The document could not be signed (certificate, timestamp authority, input); callers
    answer 503, not 500."""


@dataclass(frozen=True)
class SignedPdf:
    data: bytes
    timestamped: bool


class ContractSigner(Protocol):
    name: str

    def sign(self, pdf: bytes, *, signer_name: str, reason: str, location: str) -> SignedPdf: ...

    def check(self) -> None: ...


class LocalPadesSigner:
    """PAdES signatures made here with pyHanko, with our own certificate (B-B), plus an RFC 3161
    timestamp when a timestamp authority is configured (B-T).

    The PKCS#12 is read on first use (`sign` or `check`), not when the app starts, like the other
    ports: a readiness check calls `check()` to find a bad file or password early.
    """

    name = "local-pades"

    def __init__(
        self,
        cert_path: str | os.PathLike[str],
        password: str | bytes | None,
        *,
        tsa_url: str | None = None,
        timestamper: TimeStamper | None = None,
        tsa_timeout: int = TSA_TIMEOUT_SECONDS,
    ):
        self.cert_path = os.path.abspath(cert_path)
        self._password = (password.encode() if isinstance(password, str) else password) or None
        if timestamper is None and tsa_url:
            timestamper = HTTPTimeStamper(tsa_url, timeout=tsa_timeout)
        self.timestamper = timestamper

    def _pyhanko_signer(self) -> signers.SimpleSigner:
        try:
            stat = os.stat(self.cert_path)
        except OSError as exc:
            raise SigningError(f"cannot read the signing certificate {self.cert_path}: {exc}") from exc
        return _load_pkcs12(self.cert_path, stat.st_mtime_ns, stat.st_size, self._password)

    @property
    def certificate(self) -> asn1_x509.Certificate:
        return self._pyhanko_signer().signing_cert

    def check(self) -> None:
        """Raise SigningError unless the certificate loads and is valid now."""
        certificate = self.certificate
        now = datetime.now(UTC)
        if not certificate.not_valid_before <= now <= certificate.not_valid_after:
            raise SigningError(
                f"the signing certificate {certificate.subject.human_friendly} is not valid now "
                f"({certificate.not_valid_before:%Y-%m-%d} to {certificate.not_valid_after:%Y-%m-%d})"
            )

    def sign(self, pdf: bytes, *, signer_name: str, reason: str, location: str) -> SignedPdf:
        self.check()
        metadata = signers.PdfSignatureMetadata(
            field_name=SIGNATURE_FIELD,
            md_algorithm="sha256",
            subfilter=SigSeedSubFilter.PADES,
            reason=reason,
            location=location,
            name=signer_name,
        )
        try:
            writer = IncrementalPdfFileWriter(BytesIO(pdf))
            output = signers.sign_pdf(
                writer, metadata, signer=self._pyhanko_signer(), timestamper=self.timestamper
            )
        # pyHanko reports bad input and signing problems as PdfError / ValueError, and the
        # timestamp authority's failures (refused, timed out, bad reply) as OSError.
        except (PdfError, ValueError, OSError) as exc:
            raise SigningError(f"could not sign the document: {exc}") from exc
        return SignedPdf(data=output.getvalue(), timestamped=self.timestamper is not None)


@lru_cache(maxsize=8)
def _load_pkcs12(path: str, mtime_ns: int, size: int, password: bytes | None) -> signers.SimpleSigner:
    """Decrypting a PKCS#12 is deliberately slow; every app built in one process (tests, CLI
    commands) shares the result. A replaced file has a new mtime/size, so it is read again."""
    try:
        pkcs12_data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the signing certificate {path}: {exc}") from exc
    try:
        signer = signers.SimpleSigner.load_pkcs12_data(pkcs12_data, other_certs=(), passphrase=password)
    except ValueError as exc:
        raise SigningError(
            f"cannot load the signing certificate {path} (not PKCS#12, or wrong password)"
        ) from exc
    if signer.signing_key is None or signer.signing_cert is None:
        raise SigningError(f"{path} holds no private key with its certificate")
    not_after = signer.signing_cert.not_valid_after
    if not_after - datetime.now(UTC) < timedelta(days=30):
        log.warning(
            "the signing certificate %s expires on %s",
            signer.signing_cert.subject.human_friendly,
            not_after.isoformat(),
        )
    return signer


def ensure_development_certificate(instance_path: str) -> tuple[str, bytes]:
    """A self-signed signing certificate for development, made once and then reused.

    Returns the PKCS#12 path and its password. A file lock makes concurrent first starts
    (several workers) agree on one certificate; both files are written then renamed.
    """
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    cert_path = instance / DEV_CERT_FILE
    password_path = instance / DEV_PASSWORD_FILE
    with open(instance / DEV_LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if cert_path.is_file() and password_path.is_file():
                return str(cert_path), password_path.read_bytes().strip()
            password = secrets.token_urlsafe(32).encode()
            _write_private(cert_path, _self_signed_pkcs12(password))
            _write_private(password_path, password + b"\n")
            log.warning("generated a self-signed development signing certificate in %s", cert_path)
            return str(cert_path), password
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _self_signed_pkcs12(password: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, DEV_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ventanilla (development only)"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ES"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Valid as long before today as after: tests and demos set the clock to fixed dates
        # (time-machine), and a certificate made after such a date must still sign at it.
        .not_valid_before(now - DEV_VALIDITY)
        .not_valid_after(now + DEV_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        b"ventanilla-dev-signing", key, certificate, None, BestAvailableEncryption(password)
    )


def build_signer(config: dict[str, Any], instance_path: str) -> ContractSigner:
    """The configured PKCS#12, or outside production a development certificate made once."""
    cert_path = config.get("SIGNING_CERT_PATH")
    password = config.get("SIGNING_CERT_PASSWORD")
    if not cert_path:
        if config.get("APP_ENV") == "production":
            raise SigningError("SIGNING_CERT_PATH is required in production")
        cert_path, password = ensure_development_certificate(instance_path)
    return LocalPadesSigner(cert_path, password, tsa_url=config.get("SIGNING_TSA_URL") or None)
