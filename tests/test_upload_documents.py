"""Uploaded documents: bounded copy, type by content, proof of readability, safe display names."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import unicodedata
import warnings
import zipfile
import zlib

import pytest
from fpdf import FPDF
from PIL import Image

from backoffice.review import documents
from backoffice.review.documents import (
    ACCEPTED_TYPES,
    CHUNK_SIZE,
    MAX_FILE_BYTES,
    DocumentProblem,
    display_name,
    inspect_upload,
)

# --- real files, made here -----------------------------------------------------------------


def make_pdf(pages: int = 1, **encryption: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Escritura de poder, página {number + 1}. " * 40)
    if encryption:
        pdf.set_encryption(**encryption)
    return bytes(pdf.output())


def noisy_image(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Random pixels, so that the compressed data is long and truncation really bites."""
    noise = random.Random(42).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, noise)


def image_bytes(kind: str, image: Image.Image | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    (image or noisy_image()).save(buffer, kind, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG of a few dozen bytes whose header claims `width` x `height` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def png_with_corrupted_idat(*, fix_crc: bool) -> bytes:
    """A PNG whose signature and IHDR are intact but whose image data is garbage."""
    data = bytearray(image_bytes("PNG"))
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    payload = start + 4
    data[payload : payload + 16] = b"\xff" * 16  # breaks the zlib header and first block
    if fix_crc:
        crc = zlib.crc32(bytes(data[start : payload + length]))
        data[payload + length : payload + length + 4] = struct.pack(">I", crc)
    return bytes(data)


def raw_pdf(objects: list[bytes]) -> bytes:
    """A hand-written PDF with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class CountingReader(io.RawIOBase):
    """An endless upload that remembers how much was read from it."""

    def __init__(self, head: bytes = b"%PDF-1.7\n"):
        self.head = head
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer)
        chunk = (self.head[self.read_bytes :] + b"\0" * size)[:size]
        buffer[:size] = chunk
        self.read_bytes += size
        return size


class TricklingReader(io.BytesIO):
    """Hands out a few bytes per read, as a slow network stream might."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(7, size if size and size > 0 else 7))


def problem_code(data: bytes, filename: str | None = "upload.bin", **kwargs) -> str:
    with pytest.raises(DocumentProblem) as excinfo:
        inspect_upload(io.BytesIO(data), filename, **kwargs)
    return excinfo.value.code


# --- accepted files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maker", "filename", "content_type"),
    [
        (lambda: make_pdf(pages=2), "Escritura.pdf", "application/pdf"),
        (lambda: image_bytes("JPEG", quality=90), "dni.jpg", "image/jpeg"),
        (lambda: image_bytes("PNG"), "cif.png", "image/png"),
    ],
    ids=["pdf", "jpeg", "png"],
)
def test_accepted_types_are_hashed_measured_and_read_back_identical(maker, filename, content_type):
    data = maker()

    inspected = inspect_upload(io.BytesIO(data), filename)

    with inspected.data:
        assert inspected.content_type == content_type
        assert inspected.content_type in ACCEPTED_TYPES
        assert inspected.size == len(data)
        assert inspected.sha256 == hashlib.sha256(data).hexdigest()
        assert inspected.display_name == filename
        assert inspected.data.tell() == 0
        assert inspected.data.read() == data


def test_content_wins_over_the_file_name():
    pdf = make_pdf()
    png = image_bytes("PNG")

    as_photo = inspect_upload(io.BytesIO(pdf), "photo.png")
    as_pdf = inspect_upload(io.BytesIO(png), "scan.pdf")

    assert as_photo.content_type == "application/pdf"
    assert as_pdf.content_type == "image/png"
    assert as_photo.display_name == "photo.png"  # the name is kept, but only as text
    as_photo.data.close()
    as_pdf.data.close()


def test_a_large_upload_spills_to_disk_and_reads_back_identical():
    data = image_bytes("PNG", noisy_image((640, 640)))
    assert len(data) > 1024 * 1024

    inspected = inspect_upload(io.BytesIO(data), "big.png")

    with inspected.data:
        assert inspected.data._rolled  # beyond the spool size: on disk, not in memory
        assert inspected.size == len(data)
        assert inspected.sha256 == hashlib.sha256(data).hexdigest()
        assert inspected.data.read() == data


def test_a_stream_that_trickles_in_is_copied_whole():
    data = image_bytes("PNG")

    inspected = inspect_upload(TricklingReader(data), "slow.png")

    with inspected.data:
        assert inspected.size == len(data)
        assert inspected.sha256 == hashlib.sha256(data).hexdigest()
        assert inspected.data.read() == data


def test_a_pdf_encrypted_without_a_user_password_is_readable():
    data = make_pdf(owner_password="only-for-editing")

    inspected = inspect_upload(io.BytesIO(data), "protected.pdf")

    assert inspected.content_type == "application/pdf"
    inspected.data.close()


def test_a_multi_picture_jpeg_from_a_phone_is_a_jpeg():
    first, second = noisy_image(), noisy_image((32, 32))
    data = image_bytes("MPO", first, save_all=True, append_images=[second])
    assert data.startswith(b"\xff\xd8\xff")

    inspected = inspect_upload(io.BytesIO(data), "IMG_0001.JPG")

    assert inspected.content_type == "image/jpeg"
    inspected.data.close()


# --- refused by type -----------------------------------------------------------------------


def gif() -> bytes:
    return image_bytes("GIF", noisy_image().convert("P"))


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("deed.pdf", make_pdf())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("maker", "filename"),
    [
        (lambda: b"<!doctype html><html><script>alert(1)</script></html>", "doc.pdf"),
        (gif, "scan.gif"),
        (zip_archive, "documents.zip"),
        (lambda: b"\x00" + random.Random(7).randbytes(4096), "random.png"),
        (lambda: b"  \n" + make_pdf(), "leading-space.pdf"),
        (lambda: b"GIF89a" + image_bytes("PNG"), "polyglot.png"),
    ],
    ids=["html-named-pdf", "gif", "zip", "random", "pdf-magic-not-at-start", "gif-header"],
)
def test_anything_but_pdf_jpeg_png_is_an_unsupported_type(maker, filename):
    assert problem_code(maker(), filename) == "unsupported_type"


# --- refused as unreadable -----------------------------------------------------------------


def test_a_truncated_pdf_is_unreadable():
    data = make_pdf(pages=3)

    assert problem_code(data[: len(data) // 2], "deed.pdf") == "unreadable"


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_a_truncated_image_is_unreadable(kind):
    data = image_bytes(kind)

    assert problem_code(data[: len(data) // 2], f"scan.{kind.lower()}") == "unreadable"


@pytest.mark.parametrize("fix_crc", [False, True], ids=["bad-checksum", "checksum-fixed-up"])
def test_a_png_with_a_valid_header_but_corrupted_data_is_unreadable(fix_crc):
    data = png_with_corrupted_idat(fix_crc=fix_crc)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")

    assert problem_code(data, "scan.png") == "unreadable"


def test_a_jpeg_with_garbage_after_the_signature_is_unreadable():
    assert problem_code(b"\xff\xd8\xff" + random.Random(3).randbytes(2048), "x.jpg") == "unreadable"


def refusal(data: bytes, filename: str = "upload.bin") -> DocumentProblem:
    with pytest.raises(DocumentProblem) as excinfo:
        inspect_upload(io.BytesIO(data), filename)
    return excinfo.value


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (1, 2**31 - 1)],
    ids=["huge", "absurd-aspect-ratio"],
)
def test_an_image_bomb_is_stopped_by_pillow_before_decoding(width, height):
    data = png_declaring(width, height)
    assert len(data) < 100

    problem = refusal(data, "bomb.png")

    assert problem.code == "unreadable"
    assert isinstance(problem.__cause__, Image.DecompressionBombError)


def test_pillows_bomb_warning_is_an_error_whatever_the_warning_filters_say():
    data = png_declaring(10_000, 10_000)  # above Pillow's MAX_IMAGE_PIXELS, below twice it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem = refusal(data, "bomb.png")

    assert problem.code == "unreadable"
    assert isinstance(problem.__cause__, Image.DecompressionBombWarning)


def test_an_image_over_our_own_pixel_limit_is_refused_before_decoding():
    data = png_declaring(9_000, 9_000)  # 81 Mpx: under Pillow's limit, over ours

    problem = refusal(data, "big.png")

    assert problem.code == "unreadable"
    assert problem.__cause__ is None
    assert "9000x9000" in str(problem)


def test_the_pixel_limit_applies_to_well_formed_images(monkeypatch):
    monkeypatch.setattr(documents, "MAX_IMAGE_PIXELS", 50 * 50)
    data = image_bytes("JPEG", noisy_image((60, 50)))

    assert problem_code(data, "photo.jpg") == "unreadable"


def test_a_password_protected_pdf_is_unreadable():
    data = make_pdf(owner_password="owner", user_password="secret")

    assert problem_code(data, "locked.pdf") == "unreadable"


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n",
        b"%PDF-1.7\n" + random.Random(5).randbytes(2048),
        raw_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]),
        raw_pdf([b"<< /Type /Catalog >>"]),
    ],
    ids=["header-only", "header-then-noise", "no-pages", "no-page-tree"],
)
def test_a_pdf_without_a_reachable_page_is_unreadable(data):
    assert problem_code(data, "deed.pdf") == "unreadable"


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n" + b"x" * (3 * 1024 * 1024),
        b"%PDF-1.7\n" + b"x" * (3 * 1024 * 1024) + b"\n%%EOF\n",
        make_pdf() + b"%" + b"x" * (3 * 1024 * 1024),
    ],
    ids=["no-trailer", "eof-without-startxref", "megabytes-after-eof"],
)
def test_a_pdf_without_a_trailer_at_its_end_is_refused_quickly(data):
    """pyHanko reads the last line backwards byte by byte: seconds per megabyte on a disk file."""
    started = time.perf_counter()

    assert problem_code(data, "deed.pdf") == "unreadable"
    assert time.perf_counter() - started < 1


def test_a_hand_written_one_page_pdf_is_readable():
    data = raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
        ]
    )

    inspected = inspect_upload(io.BytesIO(data), "deed.pdf")

    assert inspected.content_type == "application/pdf"
    inspected.data.close()


# --- refused as empty or too large ---------------------------------------------------------


@pytest.mark.parametrize("filename", ["deed.pdf", "", None])
def test_an_empty_file_is_required(filename):
    assert problem_code(b"", filename) == "required"


def test_a_file_over_the_limit_is_too_large_and_the_stream_is_not_drained():
    source = CountingReader()

    with pytest.raises(DocumentProblem) as excinfo:
        inspect_upload(source, "endless.pdf", max_bytes=1024)

    assert excinfo.value.code == "too_large"
    assert 1024 < source.read_bytes <= 1024 + CHUNK_SIZE


def test_the_limit_itself_is_allowed():
    data = make_pdf()

    inspected = inspect_upload(io.BytesIO(data), "deed.pdf", max_bytes=len(data))
    inspected.data.close()

    assert problem_code(data, "deed.pdf", max_bytes=len(data) - 1) == "too_large"


def test_the_default_limit_is_ten_megabytes():
    assert MAX_FILE_BYTES == 10 * 1024 * 1024


def test_document_problems_only_carry_known_codes():
    assert DocumentProblem("too_large").code == "too_large"
    assert isinstance(DocumentProblem("required"), ValueError)
    with pytest.raises(ValueError, match="unknown"):
        DocumentProblem("virus")


# --- display names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.pdf", "evil.pdf"),
        ("/home/ana/../deed.pdf", "deed.pdf"),
        ("a\r\nb.pdf", "a b.pdf"),
        ("\x00x.pdf", "x.pdf"),
        ("  poder \t  notarial .pdf  ", "poder notarial .pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override cannot disguise it
        ("", "document"),
        (None, "document"),
        ("   ", "document"),
        ("..", "document"),
        ("folder/", "document"),
        ("\x00\x01\x1b", "document"),
        ("Escritura pública.pdf", "Escritura pública.pdf"),
        ("Poder_Núñez_2026.PDF", "Poder_Núñez_2026.PDF"),
        ("契約書.pdf", "契約書.pdf"),
    ],
)
def test_display_name_is_safe_text(filename, expected):
    assert display_name(filename) == expected


def test_display_name_is_nfc():
    decomposed = unicodedata.normalize("NFD", "Escritura pública.pdf")
    assert decomposed != "Escritura pública.pdf"

    assert display_name(decomposed) == "Escritura pública.pdf"


@pytest.mark.parametrize("stem_char", ["a", "ñ"])
def test_a_long_display_name_keeps_its_extension(stem_char):
    name = display_name(stem_char * 996 + ".pdf")

    assert len(name) == 255
    assert name == stem_char * 251 + ".pdf"


def test_a_long_display_name_without_an_extension_is_cut():
    assert display_name("x" * 1000) == "x" * 255


def test_the_upload_carries_the_display_name():
    inspected = inspect_upload(io.BytesIO(make_pdf()), "..\\..\\a\r\nb.pdf")

    assert inspected.display_name == "a b.pdf"
    inspected.data.close()
