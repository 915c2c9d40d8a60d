"""The document storage port: the local folder adapter with its signed app URLs, and the S3
adapter against moto's real HTTP server (and against an endpoint that is not there)."""

from __future__ import annotations

import io
import random
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
import requests
import time_machine
from flask import Flask
from itsdangerous import URLSafeSerializer

from backoffice.storage import (
    InvalidKey,
    LocalStorage,
    S3Storage,
    StorageError,
    content_disposition,
    new_key,
    validate_key,
)

KEY_SHAPE = re.compile(r"^contracts/\d{4}/\d{2}/[0-9a-f]{32}$")
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
HOSTILE_NAME = 'Escritura pública "x"\r\n.pdf'
DISPOSITION = re.compile(
    r"^(inline|attachment); filename=\"([^\"\\\r\n]*)\"; filename\*=UTF-8''([A-Za-z0-9%._~-]*)$"
)

# Keys we never generate and must never touch: parent escapes, absolute paths, dot segments,
# empty segments, separators and control characters.
DANGEROUS_KEYS = [
    "../x",
    "..",
    ".",
    "/etc/passwd",
    "a/../../b",
    "a/..",
    "a/./b",
    "./a",
    "a/.hidden",
    "a/b..c",
    "a//b",
    "a/b/",
    "a\\..\\b",
    "A/b",
    "a/b\n",
    "a\n",
    "a/b\x00",
    "a b",
    "",
]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def put_pdf(storage, data: bytes = PDF, prefix: str = "contracts") -> str:
    return storage.put(io.BytesIO(data), prefix=prefix, content_type="application/pdf")


def read_all(stream) -> bytes:
    try:
        return stream.read()
    finally:
        stream.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- local folder -------------------------------------------------------------------------------


@pytest.fixture
def storage(app: Flask) -> LocalStorage:
    return app.extensions["storage"]


def test_default_storage_is_a_local_folder_under_the_configured_path(storage, tmp_path):
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "documents").resolve()


def test_put_returns_a_generated_key_of_prefix_year_month_and_random_hex(storage):
    assert KEY_SHAPE.match(put_pdf(storage))


def test_put_key_carries_the_current_utc_year_and_month(storage):
    with time_machine.travel(datetime(2031, 2, 28, 23, 30, tzinfo=UTC), tick=False):
        key = put_pdf(storage)

    assert key.startswith("contracts/2031/02/")


def test_put_never_derives_the_key_from_the_uploaded_file_name(storage, tmp_path):
    upload = tmp_path / "Escritura pública.pdf"
    upload.write_bytes(PDF)

    with upload.open("rb") as stream:
        key = storage.put(stream, prefix="contracts", content_type="application/pdf")

    assert KEY_SHAPE.match(key)
    assert "escritura" not in key.lower()


def test_two_puts_of_the_same_bytes_get_different_keys(storage):
    assert put_pdf(storage) != put_pdf(storage)


def test_open_returns_the_bytes_that_were_put(storage):
    key = put_pdf(storage)

    assert read_all(storage.open(key)) == PDF


def test_put_writes_the_file_at_its_key_under_the_root(storage):
    key = put_pdf(storage)

    assert (storage.root / key).read_bytes() == PDF


def test_put_leaves_no_temporary_upload_file_behind(storage):
    key = put_pdf(storage)

    assert [path.name for path in (storage.root / key).parent.iterdir()] == [key.rsplit("/", 1)[1]]


def test_a_five_megabyte_stream_round_trips_byte_for_byte(storage):
    data = payload(5 * 1024 * 1024 + 7)

    key = storage.put(io.BytesIO(data), prefix="contracts", content_type="application/pdf")

    assert read_all(storage.open(key)) == data


def test_an_empty_stream_round_trips(storage):
    key = put_pdf(storage, b"")

    assert read_all(storage.open(key)) == b""


def test_exists_is_true_for_a_stored_document(storage):
    key = put_pdf(storage)

    assert storage.exists(key) is True


def test_exists_is_false_for_a_well_formed_key_never_stored(storage):
    assert storage.exists(new_key("contracts")) is False


def test_delete_removes_the_document(storage):
    key = put_pdf(storage)

    storage.delete(key)

    assert storage.exists(key) is False
    assert not (storage.root / key).exists()


def test_delete_of_a_missing_document_is_a_no_op(storage):
    storage.delete(new_key("contracts"))


def test_open_of_a_missing_document_raises_storage_error(storage):
    with pytest.raises(StorageError):
        storage.open(new_key("contracts"))


def test_open_of_a_key_naming_a_folder_raises_storage_error(storage):
    key = put_pdf(storage)

    with pytest.raises(StorageError):
        storage.open(key.rsplit("/", 1)[0])


def test_put_refuses_a_prefix_that_is_not_a_plain_name(storage):
    with pytest.raises(InvalidKey):
        put_pdf(storage, prefix="../outside")

    assert not (storage.root.parent / "outside").exists()


@pytest.mark.parametrize("key", DANGEROUS_KEYS)
def test_validate_key_refuses_keys_we_never_generate(key):
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize("key", ["contracts/2031/02/0a1b2c", "ids/x", "a/b.c", "a-b_c/d-e.f"])
def test_validate_key_accepts_plain_relative_names(key):
    assert validate_key(key) == key


def test_validate_key_accepts_every_generated_key():
    key = new_key("contracts")

    assert validate_key(key) == key


def test_invalid_key_is_a_storage_error_so_callers_need_one_except():
    assert issubclass(InvalidKey, StorageError)


@pytest.mark.parametrize("key", ["../victim.pdf", "/etc/passwd", "a/../../victim.pdf", "a/./b"])
def test_open_refuses_path_escapes(storage, tmp_path, key):
    (tmp_path / "victim.pdf").write_bytes(b"secret")

    with pytest.raises(InvalidKey):
        storage.open(key)


@pytest.mark.parametrize("key", ["../victim.pdf", "documents/../../victim.pdf"])
def test_delete_refuses_path_escapes_and_leaves_the_file(storage, tmp_path, key):
    victim = tmp_path / "victim.pdf"
    victim.write_bytes(b"secret")

    with pytest.raises(InvalidKey):
        storage.delete(key)

    assert victim.read_bytes() == b"secret"


@pytest.mark.parametrize("key", ["../victim.pdf", "/etc/passwd"])
def test_exists_refuses_path_escapes(storage, tmp_path, key):
    (tmp_path / "victim.pdf").write_bytes(b"secret")

    with pytest.raises(InvalidKey):
        storage.exists(key)


def test_a_symlink_inside_the_root_cannot_lead_outside_it(storage, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (storage.root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey):
        storage.open("link/secret")


def test_check_passes_on_a_writable_root(storage):
    storage.check()


def test_check_raises_storage_error_when_the_root_is_gone(storage):
    storage.root.rmdir()

    with pytest.raises(StorageError):
        storage.check()


# --- local signed URLs --------------------------------------------------------------------------

SIGNED_AT = datetime(2030, 5, 6, 10, 0, tzinfo=UTC)


def signed_url(app: Flask, key: str, **options) -> str:
    options = {"filename": "Poliza.pdf", "content_type": "application/pdf"} | options
    with app.test_request_context():
        return app.extensions["storage"].url(key, **options)


def download(app: Flask, url: str):
    response = app.test_client().get(url)
    response.get_data()
    response.close()
    return response


def test_url_is_an_app_files_route_with_an_opaque_token(app, storage):
    url = signed_url(app, put_pdf(storage))

    assert re.fullmatch(r"/files/[A-Za-z0-9_.-]+", url)


def test_signed_url_serves_the_exact_bytes(app, storage):
    data = payload(300_000)
    key = put_pdf(storage, data)

    response = download(app, signed_url(app, key))

    assert response.status_code == 200
    assert response.data == data


def test_signed_url_serves_an_allowed_content_type_as_requested(app, storage):
    response = download(app, signed_url(app, put_pdf(storage), content_type="image/png"))

    assert response.mimetype == "image/png"


def test_signed_url_inline_names_the_file_inline(app, storage):
    url = signed_url(app, put_pdf(storage), filename="Poliza 2024.pdf", inline=True)

    response = download(app, url)

    assert response.headers["Content-Disposition"] == (
        "inline; filename=\"Poliza 2024.pdf\"; filename*=UTF-8''Poliza%202024.pdf"
    )


def test_signed_url_is_an_attachment_unless_inline_is_asked(app, storage):
    response = download(app, signed_url(app, put_pdf(storage), filename="Poliza.pdf"))

    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"Poliza.pdf\"; filename*=UTF-8''Poliza.pdf"
    )


def test_signed_url_response_forbids_content_sniffing(app, storage):
    response = download(app, signed_url(app, put_pdf(storage)))

    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_signed_url_response_is_never_stored_by_caches(app, storage):
    response = download(app, signed_url(app, put_pdf(storage)))

    directives = {part.strip() for part in response.headers["Cache-Control"].split(",")}
    assert "no-store" in directives
    assert "public" not in directives


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=utf-8", "image/svg+xml", "application/xhtml+xml", "text/plain", ""],
)
def test_signed_url_never_serves_a_type_outside_the_allow_list(app, storage, content_type):
    key = put_pdf(storage, b"<script>alert(1)</script>")

    response = download(app, signed_url(app, key, content_type=content_type, inline=True))

    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"


def test_a_hostile_display_name_gives_one_safe_header_that_round_trips(app, storage):
    response = download(app, signed_url(app, put_pdf(storage), filename=HOSTILE_NAME, inline=True))

    values = response.headers.getlist("Content-Disposition")
    assert len(values) == 1
    match = DISPOSITION.fullmatch(values[0])
    assert match, values[0]
    assert match.group(1) == "inline"
    assert match.group(2).isascii()
    assert unquote(match.group(3)) == HOSTILE_NAME


def test_a_slash_in_the_display_name_is_percent_encoded(app, storage):
    response = download(app, signed_url(app, put_pdf(storage), filename="expedientes/2024.pdf"))

    assert response.headers["Content-Disposition"].endswith("filename*=UTF-8''expedientes%2F2024.pdf")


def test_an_empty_display_name_falls_back_to_document(app, storage):
    response = download(app, signed_url(app, put_pdf(storage), filename=""))

    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"document\"; filename*=UTF-8''document"
    )


def test_a_tampered_token_is_not_found(app, storage):
    url = signed_url(app, put_pdf(storage))
    body, signature = url.rsplit(".", 1)
    tampered = body + "." + ("A" if signature[0] != "A" else "B") + signature[1:]

    assert download(app, tampered).status_code == 404


def test_a_token_signed_with_another_secret_is_not_found(app, storage):
    key = put_pdf(storage)
    forged = URLSafeSerializer("some-other-secret", salt="local-document-url").dumps(
        {
            "key": key,
            "filename": "x.pdf",
            "content_type": "application/pdf",
            "inline": True,
            "exp": int(time.time()) + 300,
        }
    )

    assert download(app, f"/files/{forged}").status_code == 404


def test_a_signed_token_for_a_path_escape_is_not_found(app, tmp_path):
    (tmp_path / "victim.pdf").write_bytes(b"secret")
    token = URLSafeSerializer(app.config["SECRET_KEY"], salt="local-document-url").dumps(
        {
            "key": "../victim.pdf",
            "filename": "x.pdf",
            "content_type": "application/pdf",
            "inline": True,
            "exp": int(time.time()) + 300,
        }
    )

    assert download(app, f"/files/{token}").status_code == 404


def test_url_refuses_a_key_we_never_generate(app, storage):
    with pytest.raises(InvalidKey):
        signed_url(app, "../victim.pdf")


def test_signed_url_of_a_deleted_document_is_not_found(app, storage):
    key = put_pdf(storage)
    url = signed_url(app, key)
    storage.delete(key)

    assert download(app, url).status_code == 404


def test_signed_url_still_works_just_before_it_expires(app, storage):
    with time_machine.travel(SIGNED_AT, tick=False):
        url = signed_url(app, put_pdf(storage), expires_in=300)
    with time_machine.travel(SIGNED_AT + timedelta(seconds=299), tick=False):
        response = download(app, url)

    assert response.status_code == 200


def test_an_expired_signed_url_is_gone(app, storage):
    with time_machine.travel(SIGNED_AT, tick=False):
        url = signed_url(app, put_pdf(storage), expires_in=300)
    with time_machine.travel(SIGNED_AT + timedelta(seconds=301), tick=False):
        response = download(app, url)

    assert response.status_code == 410


def test_expires_in_sets_the_lifetime_of_the_url(app, storage):
    with time_machine.travel(SIGNED_AT, tick=False):
        url = signed_url(app, put_pdf(storage), expires_in=10)
    with time_machine.travel(SIGNED_AT + timedelta(seconds=11), tick=False):
        response = download(app, url)

    assert response.status_code == 410


# --- content disposition (shared by both adapters) ---------------------------------------------


@pytest.mark.parametrize(
    "name", [HOSTILE_NAME, 'a"; filename="evil.html', "ñ" * 400, "x\x00y\x7f.pdf", "😀.pdf", "a/b\\c.pdf"]
)
def test_content_disposition_is_a_single_well_formed_header_value(name):
    value = content_disposition(name, inline=False)

    assert DISPOSITION.fullmatch(value), value
    assert value.isascii()


def test_content_disposition_keeps_the_utf8_name_for_modern_browsers():
    value = content_disposition("Escritura pública.pdf", inline=True)

    assert value.endswith("filename*=UTF-8''Escritura%20p%C3%BAblica.pdf")


# --- S3 through moto's real HTTP server ---------------------------------------------------------


@pytest.fixture(autouse=True)
def dummy_aws_credentials(aws_credentials):
    """Every test here, S3 or not, runs without the developer's own AWS set-up."""


@pytest.fixture
def s3_app(make_app, moto_endpoint, bucket) -> Iterator[Flask]:
    app = make_app(STORAGE_URL=f"s3://{bucket}/some/prefix", S3_ENDPOINT_URL=moto_endpoint)
    with app.app_context():
        yield app


@pytest.fixture
def s3_storage(s3_app) -> S3Storage:
    return s3_app.extensions["storage"]


def test_s3_storage_url_selects_the_s3_adapter_with_bucket_and_prefix(s3_storage, bucket):
    assert isinstance(s3_storage, S3Storage)
    assert (s3_storage.bucket, s3_storage.prefix) == (bucket, "some/prefix")


def test_s3_put_returns_a_generated_key(s3_storage):
    assert KEY_SHAPE.match(put_pdf(s3_storage))


def test_s3_open_returns_the_bytes_that_were_put(s3_storage):
    key = put_pdf(s3_storage)

    assert read_all(s3_storage.open(key)) == PDF


def test_s3_object_is_stored_under_the_prefix_encrypted_with_its_content_type(s3_storage, s3_client, bucket):
    key = put_pdf(s3_storage)

    head = s3_client.head_object(Bucket=bucket, Key=f"some/prefix/{key}")

    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/pdf"
    assert head["ContentLength"] == len(PDF)


def test_s3_a_stream_above_the_multipart_threshold_round_trips_encrypted(s3_storage, s3_client, bucket):
    data = payload(9 * 1024 * 1024 + 3)

    key = s3_storage.put(io.BytesIO(data), prefix="contracts", content_type="application/pdf")

    assert read_all(s3_storage.open(key)) == data
    assert s3_client.head_object(Bucket=bucket, Key=f"some/prefix/{key}")["ServerSideEncryption"] == "AES256"


def test_s3_exists_is_true_for_a_stored_document(s3_storage):
    assert s3_storage.exists(put_pdf(s3_storage)) is True


def test_s3_exists_is_false_for_a_key_never_stored(s3_storage):
    assert s3_storage.exists(new_key("contracts")) is False


def test_s3_delete_removes_the_document(s3_storage):
    key = put_pdf(s3_storage)

    s3_storage.delete(key)

    assert s3_storage.exists(key) is False


def test_s3_open_of_a_missing_document_raises_storage_error(s3_storage):
    with pytest.raises(StorageError):
        s3_storage.open(new_key("contracts"))


@pytest.mark.parametrize("method", ["open", "delete", "exists"])
def test_s3_refuses_keys_we_never_generate(s3_storage, method):
    with pytest.raises(InvalidKey):
        getattr(s3_storage, method)("../x")


def test_s3_presigned_url_serves_the_bytes_with_the_requested_disposition(s3_storage):
    key = put_pdf(s3_storage)
    url = s3_storage.url(key, filename=HOSTILE_NAME, content_type="application/pdf", inline=True)

    response = requests.get(url, timeout=10)

    assert response.status_code == 200
    assert response.content == PDF
    assert response.headers["Content-Disposition"] == content_disposition(HOSTILE_NAME, inline=True)
    assert response.headers["Content-Type"] == "application/pdf"


def test_s3_presigned_url_never_asks_for_a_type_outside_the_allow_list(s3_storage):
    key = put_pdf(s3_storage, b"<script>alert(1)</script>")
    url = s3_storage.url(key, filename="x.html", content_type="text/html", inline=True)

    response = requests.get(url, timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_s3_presigned_url_stops_working_after_delete(s3_storage):
    key = put_pdf(s3_storage)
    url = s3_storage.url(key, filename="x.pdf", content_type="application/pdf")
    s3_storage.delete(key)

    response = requests.get(url, timeout=10)

    assert response.status_code in (403, 404)  # S3 answers 403 to callers without ListBucket
    assert PDF not in response.content


def test_s3_check_passes_when_the_bucket_exists(s3_storage):
    s3_storage.check()


def test_s3_check_raises_storage_error_when_the_bucket_is_missing(make_app, moto_endpoint):
    app = make_app(STORAGE_URL="s3://no-such-bucket-here/p", S3_ENDPOINT_URL=moto_endpoint)

    with pytest.raises(StorageError):
        app.extensions["storage"].check()


# --- S3 down ------------------------------------------------------------------------------------

PROMPTLY_SECONDS = 10


@pytest.fixture
def down_storage(make_app) -> S3Storage:
    app = make_app(STORAGE_URL="s3://ventanilla/p", S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    return app.extensions["storage"]


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda storage: put_pdf(storage), id="put"),
        pytest.param(lambda storage: storage.open(new_key("contracts")), id="open"),
        pytest.param(lambda storage: storage.exists(new_key("contracts")), id="exists"),
        pytest.param(lambda storage: storage.delete(new_key("contracts")), id="delete"),
        pytest.param(lambda storage: storage.check(), id="check"),
    ],
)
def test_s3_down_raises_storage_error_promptly(down_storage, operation):
    started = time.monotonic()

    with pytest.raises(StorageError) as error:
        operation(down_storage)

    assert time.monotonic() - started < PROMPTLY_SECONDS
    assert "connect" in str(error.value).lower()
