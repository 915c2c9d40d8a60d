"""The document storage port: S3 in production, a local folder by default.

Keys are always generated here (never from a user's file name), so a key can be trusted to
be a plain relative name. Adapters return keys, streams and URLs, never Flask responses.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_.-]*)*$")
CHUNK_SIZE = 1024 * 1024
# Types a download may be served as; anything else (HTML, SVG, ...) goes out as opaque bytes.
SERVABLE_TYPES = {"application/pdf", "image/jpeg", "image/png"}


class StorageError(Exception):
    """The storage backend could not do what was asked; callers answer 503, not 500."""


class InvalidKey(StorageError):
    """A key that is not one we generate: path escapes and absolute paths land here."""


class DocumentStorage(Protocol):
    name: str

    def put(self, stream: IO[bytes], *, prefix: str, content_type: str) -> str: ...

    def open(self, key: str) -> IO[bytes]: ...

    def url(
        self,
        key: str,
        *,
        filename: str,
        content_type: str,
        inline: bool = False,
        expires_in: int | None = None,
    ) -> str: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]: ...

    def check(self) -> None: ...


def new_key(prefix: str) -> str:
    """`<prefix>/<yyyy>/<mm>/<random>`: the prefix names the kind of document, the rest is ours."""
    if not KEY_PATTERN.fullmatch(prefix):
        raise InvalidKey(f"bad key prefix {prefix!r}")
    today = datetime.now(UTC)
    return f"{prefix}/{today:%Y/%m}/{secrets.token_hex(16)}"


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or ".." in key:
        raise InvalidKey(f"refused storage key {key!r}")
    return key


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266 header with an ASCII fallback and the UTF-8 name, safe for any display name."""
    from urllib.parse import quote

    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename)[:150] or "document"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:150], safe='')}"


def servable_content_type(content_type: str | None) -> str:
    return content_type if content_type in SERVABLE_TYPES else "application/octet-stream"


def document_headers(filename: str, content_type: str | None, inline: bool) -> tuple[str, str]:
    """The Content-Type and Content-Disposition a stored document goes out with: a type from our
    allow-list, and inline (shown in the browser) only for those; anything else is downloaded."""
    served = servable_content_type(content_type)
    return served, content_disposition(filename, inline and served in SERVABLE_TYPES)


class LocalStorage:
    """Files under one root folder. Download URLs are signed, short-lived app URLs."""

    name = "local"

    def __init__(
        self, root: str | Path, url_signer: Callable[[dict[str, Any], int], str], url_ttl: int = 300
    ):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url_signer = url_signer
        self.url_ttl = url_ttl

    def path_for(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"refused storage key {key!r}")
        return path

    def put(self, stream: IO[bytes], *, prefix: str, content_type: str) -> str:
        key = new_key(prefix)
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        except OSError as exc:
            raise StorageError(f"could not write {key}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(stream, handle, CHUNK_SIZE)
            os.replace(tmp_name, path)
        except BaseException as exc:
            Path(tmp_name).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"could not write {key}: {exc}") from exc
            raise
        return key

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.path_for(key).open("rb")
        except OSError as exc:
            raise StorageError(f"no document at {key}") from exc

    def url(
        self,
        key: str,
        *,
        filename: str,
        content_type: str,
        inline: bool = False,
        expires_in: int | None = None,
    ) -> str:
        validate_key(key)
        claims = {"key": key, "filename": filename, "content_type": content_type, "inline": inline}
        return self.url_signer(claims, expires_in or self.url_ttl)

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every stored key under `prefix`, with when it was written; unfinished uploads (dot
        files) are not keys and are left out."""
        if not KEY_PATTERN.fullmatch(prefix):
            raise InvalidKey(f"bad key prefix {prefix!r}")
        try:
            for path in sorted((self.root / prefix).rglob("*")):
                key = path.relative_to(self.root).as_posix()
                if path.is_file() and KEY_PATTERN.fullmatch(key):
                    yield key, datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError as exc:
            raise StorageError(f"could not list {prefix}: {exc}") from exc

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")


class S3Storage:
    """S3 (or any S3-compatible endpoint) with server-side encryption and presigned GETs."""

    name = "s3"

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, url_ttl: int = 300):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.url_ttl = url_ttl
        self._client: Any = None

    @property
    def client(self) -> Any:
        """Made on first use, so starting the app never waits on AWS credential discovery."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(
                    connect_timeout=3, read_timeout=20, retries={"max_attempts": 2}, signature_version="s3v4"
                ),
            )
        return self._client

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 {operation} failed: {exc}") from exc

    def put(self, stream: IO[bytes], *, prefix: str, content_type: str) -> str:
        key = new_key(prefix)
        self._call(
            "upload_fileobj",
            Fileobj=stream,
            Bucket=self.bucket,
            Key=self._object_key(key),
            ExtraArgs={"ServerSideEncryption": "AES256", "ContentType": content_type},
        )
        return key

    def open(self, key: str) -> IO[bytes]:
        return self._call("get_object", Bucket=self.bucket, Key=self._object_key(key))["Body"]

    def url(
        self,
        key: str,
        *,
        filename: str,
        content_type: str,
        inline: bool = False,
        expires_in: int | None = None,
    ) -> str:
        served_type, disposition = document_headers(filename, content_type, inline)
        return self._call(
            "generate_presigned_url",
            ClientMethod="get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._object_key(key),
                "ResponseContentDisposition": disposition,
                "ResponseContentType": served_type,
            },
            ExpiresIn=expires_in or self.url_ttl,
        )

    def delete(self, key: str) -> None:
        self._call("delete_object", Bucket=self.bucket, Key=self._object_key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"S3 head_object failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 head_object failed: {exc}") from exc
        return True

    def list_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every stored key under `prefix`, with its last-modified time, a page at a time."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not KEY_PATTERN.fullmatch(prefix):
            raise InvalidKey(f"bad key prefix {prefix!r}")
        ours = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{ours}{prefix}/"
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"].removeprefix(ours)
                    if KEY_PATTERN.fullmatch(key):
                        yield key, item["LastModified"].astimezone(UTC)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 list_objects_v2 failed: {exc}") from exc

    def check(self) -> None:
        self._call("head_bucket", Bucket=self.bucket)


def build_storage(
    config: dict[str, Any], url_signer: Callable[[dict[str, Any], int], str]
) -> DocumentStorage:
    url = config["STORAGE_URL"]
    parts = urlsplit(url)
    ttl = int(config["STORAGE_URL_TTL_SECONDS"])
    if parts.scheme == "s3":
        return S3Storage(parts.netloc, parts.path, endpoint_url=config.get("S3_ENDPOINT_URL"), url_ttl=ttl)
    if parts.scheme == "file":
        return LocalStorage(unquote(parts.path), url_signer, url_ttl=ttl)
    raise ValueError(f"STORAGE_URL must be s3://bucket/prefix or file:///path, not {url!r}")
