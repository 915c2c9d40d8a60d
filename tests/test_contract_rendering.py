"""The e-Customer service contract PDF: what it says, in which language, and that it is stable."""

from __future__ import annotations

import re
from datetime import date, datetime
from io import BytesIO
from pathlib import Path

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader

from backoffice.signing.contract import CONTRACT_VERSION, LANGUAGES, TEMPLATES, render_contract

SIGNING_DATE = date(2026, 3, 15)
LITERAL_STRING = re.compile(rb"\((?:[^()\\]|\\.)*\)", re.DOTALL)
ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.DOTALL)
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(literal: bytes) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        value = match.group(1)
        if value[:1].isdigit():
            return bytes([int(value, 8) & 0xFF])
        return ESCAPES.get(value, value)

    return ESCAPE.sub(replace, literal[1:-1])


def open_pdf(data: bytes) -> PdfFileReader:
    return PdfFileReader(BytesIO(data))


def page_texts(data: bytes) -> list[str]:
    """The text shown on each page, read from the decoded content streams (the core fonts are
    WinAnsi-encoded), with runs of whitespace collapsed so line wrapping does not matter."""
    reader = open_pdf(data)
    texts = []
    for page_ref in reader.root["/Pages"]["/Kids"]:
        page = page_ref.get_object()
        contents = page["/Contents"]
        streams = contents if isinstance(contents, generic.ArrayObject) else [contents]
        raw = b"".join(stream.get_object().data for stream in streams)
        shown = " ".join(_unescape(m.group()).decode("cp1252") for m in LITERAL_STRING.finditer(raw))
        texts.append(" ".join(shown.split()))
    return texts


def text_of(data: bytes) -> str:
    return " ".join(page_texts(data))


def render(**overrides) -> bytes:
    arguments = {
        "language": "es",
        "holder_name": "María Núñez Ibáñez",
        "tax_id": "12345678Z",
        "signing_date": SIGNING_DATE,
    }
    return render_contract(**{**arguments, **overrides})


def test_spanish_contract_is_an_a4_pdf_with_the_holder_date_and_version():
    data = render()

    assert data.startswith(b"%PDF-")
    reader = open_pdf(data)
    page_count = int(reader.root["/Pages"]["/Count"])
    assert page_count >= 1
    first_page = reader.root["/Pages"]["/Kids"][0].get_object()
    media_box = first_page.get("/MediaBox") or reader.root["/Pages"]["/MediaBox"]  # may be inherited
    width, height = float(media_box[2]), float(media_box[3])
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    assert str(reader.trailer["/Info"]["/Title"]).startswith("CONTRATO DE PRESTACIÓN DE SERVICIOS")

    text = text_of(data)
    assert "CONTRATO DE PRESTACIÓN DE SERVICIOS DEL ÁREA DE CLIENTE E-CUSTOMER" in text
    assert "María Núñez Ibáñez, con NIF/NIE 12345678Z" in text
    assert "Fecha: 15 de marzo de 2026." in text
    assert f"versión {CONTRACT_VERSION}" in text
    assert "917 83 83 83" in text
    for law in ("Ley 6/2020", "910/2014 (eIDAS)", "2016/679 (RGPD)", "Ley Orgánica 3/2018 (LOPDGDD)"):
        assert law in text


def test_every_page_has_the_version_in_the_header_and_a_numbered_footer():
    data = render()
    pages = page_texts(data)

    assert len(pages) >= 2
    for number, text in enumerate(pages, start=1):
        assert f"Contrato de servicios e-Customer - versión {CONTRACT_VERSION}" in text
        assert (
            f"Versión del contrato {CONTRACT_VERSION} | Fecha: 15/03/2026 | Página {number} de {len(pages)}"
            in text
        )
    assert "{nb}" not in text_of(data)


def test_english_contract_differs_from_the_spanish_one():
    spanish = render(language="es")
    english = render(language="en", holder_name="John Smith", tax_id="X1234567L")

    assert spanish != render(language="en")
    text = text_of(english)
    assert "E-CUSTOMER SERVICE CONTRACT" in text
    assert "John Smith, holder of tax ID (NIF/NIE) X1234567L" in text
    assert "Date: 15 March 2026." in text
    assert f"Contract version {CONTRACT_VERSION} | Date: 2026-03-15 | Page 1 of" in text
    for law in ("Law 6/2020", "910/2014 (eIDAS)", "2016/679 (GDPR)", "3/2018 (LOPDGDD)", "917 83 83 83"):
        assert law in text
    assert "CONTRATO" not in text


@pytest.mark.parametrize("language", ["fr", "ES", "", "../es"])
def test_unknown_language_is_refused(language):
    with pytest.raises(ValueError, match="language"):
        render(language=language)


@pytest.mark.parametrize("version", ["1999.1", "../2026.1", "2026.1/../2026.1", "latest"])
def test_unknown_version_is_refused(version):
    with pytest.raises(ValueError, match="version"):
        render(version=version)


def test_the_holder_name_and_tax_id_are_required():
    with pytest.raises(ValueError, match="holder_name"):
        render(holder_name="  ")
    with pytest.raises(ValueError, match="tax_id"):
        render(tax_id="")


def test_signing_date_must_be_a_date_not_a_datetime():
    with pytest.raises(ValueError, match="date"):
        render(signing_date=datetime(2026, 3, 15, 10, 0))


def test_accented_names_render_in_both_languages():
    for language in LANGUAGES:
        text = text_of(render(language=language, holder_name="María Núñez", tax_id="X1234567L"))
        assert "María Núñez" in text


def test_names_outside_the_pdf_fonts_are_transliterated_not_refused():
    text = text_of(render(holder_name="Łukasz Żółć Ὀδυσσεύς"))

    assert "Lukasz Zólc" in text  # Ł has no decomposition, Ż and ć lose their accents
    assert "?" in text  # Greek has no Latin-1 letter to fall back on


def test_line_breaks_in_a_name_cannot_reshape_the_document():
    text = text_of(render(holder_name="Ana\n## 9. CLÁUSULA FALSA\r\nPérez"))

    assert "Ana ## 9. CLÁUSULA FALSA Pérez, con NIF/NIE 12345678Z" in text


def test_rendering_is_repeatable_byte_for_byte():
    assert render() == render()
    assert render() != render(signing_date=date(2026, 3, 16))
    assert render() != render(tax_id="87654321X")


def test_templates_exist_for_every_language_and_only_use_characters_the_pdf_fonts_have():
    for language in LANGUAGES:
        assert (TEMPLATES / "contracts" / CONTRACT_VERSION / f"{language}.txt").is_file()
    for template in Path(TEMPLATES, "contracts").glob("*/*.txt"):
        template.read_text(encoding="utf-8").encode("cp1252")  # raises on anything unsupported
