"""The e-Customer service contract: a versioned text template rendered to a PDF.

The wording lives in `templates/contracts/<version>/<language>.txt` (Jinja). A published
version is never edited: new wording goes into a new folder and `CONTRACT_VERSION` moves on,
so the version recorded with a signature always names the text that was signed.

Template format: a few `key: value` lines (`title`, `header`, `footer`), a line `---`, then
the body: `## ` starts a section heading, `- ` a list item, a blank line ends a paragraph and
other lines are joined into the paragraph they belong to. In `footer`, `{page}` and `{pages}`
become the page number and the page count.

Rendering is pure and repeatable: the same arguments give the same bytes (the PDF's creation
date is the signing date, and nothing else varies), so the PDF a customer reads and the PDF
that is signed can be compared by hash.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

CONTRACT_VERSION = "2026.1"
LANGUAGES = ("es", "en")
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# The PDF core fonts (Helvetica) are encoded as WinAnsi (cp1252): Latin-1 plus the euro sign,
# typographic quotes and dashes. Anything else is transliterated (see `_pdf_text`).
PDF_ENCODING = "windows-1252"
_VERSION_PATTERN = re.compile(r"^[0-9]{4}\.[0-9]+$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Latin letters that have no decomposition to a base letter plus accent.
_TRANSLITERATIONS = str.maketrans(
    {
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Ħ": "H",
        "ħ": "h",
        "ı": "i",
        "Ŧ": "T",
        "ŧ": "t",
        "Ŋ": "N",
        "ŋ": "n",
    }
)
_MONTHS = {
    "es": [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ],
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Plain text, not HTML: nothing to escape. Values are data, never template source.
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html", "xml"), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def long_date(value: date, language: str) -> str:
    month = _MONTHS[language][value.month - 1]
    if language == "es":
        return f"{value.day} de {month} de {value.year}"
    return f"{value.day} {month} {value.year}"


def _clean_value(value: str, what: str) -> str:
    """One line of text: no control characters or line breaks that could reshape the document."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    cleaned = " ".join(_CONTROL_CHARACTERS.sub(" ", unicodedata.normalize("NFC", value)).split())
    if not cleaned:
        raise ValueError(f"{what} is required")
    return cleaned


def render_contract(
    *,
    language: str,
    holder_name: str,
    tax_id: str,
    signing_date: date,
    version: str = CONTRACT_VERSION,
) -> bytes:
    """The contract as PDF bytes, exactly as it will be shown to the holder and signed."""
    if language not in LANGUAGES:
        raise ValueError(f"no contract in language {language!r}; available: {', '.join(LANGUAGES)}")
    if not isinstance(version, str) or not _VERSION_PATTERN.fullmatch(version):
        raise ValueError(f"unknown contract version {version!r}")
    if isinstance(signing_date, datetime) or not isinstance(signing_date, date):
        raise ValueError("signing_date must be a date")
    try:
        template = _environment().get_template(f"contracts/{version}/{language}.txt")
    except TemplateNotFound as exc:
        raise ValueError(f"unknown contract version {version!r} for language {language!r}") from exc
    text = template.render(
        holder_name=_clean_value(holder_name, "holder_name"),
        tax_id=_clean_value(tax_id, "tax_id"),
        version=version,
        date=long_date(signing_date, language),
        date_short=signing_date.strftime("%d/%m/%Y"),
        date_iso=signing_date.isoformat(),
    )
    meta, blocks = _parse(text)
    return _to_pdf(meta, blocks, language=language, signing_date=signing_date)


def _parse(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    head, separator, body = text.partition("\n---\n")
    if not separator:
        raise ValueError("contract template has no '---' line after its header fields")
    meta: dict[str, str] = {}
    for line in head.splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            meta[key.strip()] = value.strip()
    missing = {"title", "header", "footer"} - meta.keys()
    if missing:
        raise ValueError(f"contract template lacks {', '.join(sorted(missing))}")

    blocks: list[tuple[str, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(("p", " ".join(paragraph)))
            paragraph.clear()

    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("## "):
            flush()
            blocks.append(("h", line[3:].strip()))
        elif line.startswith("- "):
            flush()
            blocks.append(("li", line[2:].strip()))
        elif raw.startswith(" ") and not paragraph and blocks and blocks[-1][0] == "li":
            blocks[-1] = ("li", f"{blocks[-1][1]} {line}")  # an indented line continues the item
        else:
            paragraph.append(line)
    flush()
    return meta, blocks


def _pdf_text(text: str) -> str:
    """Text the core fonts can show: characters outside cp1252 lose their accents (Ł becomes L,
    a letter with no Latin equivalent becomes '?'), so rendering never fails on an unusual name."""
    try:
        text.encode(PDF_ENCODING)
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for char in text.translate(_TRANSLITERATIONS):
        try:
            char.encode(PDF_ENCODING)
            out.append(char)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and base.isascii() else "?")
    return "".join(out)


class _ContractPdf(FPDF):
    def __init__(self, header_text: str, footer_text: str):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.header_text = header_text
        self.footer_text = footer_text

    def header(self) -> None:
        self.set_font("Helvetica", size=8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 5, self.header_text, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(190, 190, 190)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.set_text_color(0, 0, 0)
        self.ln(6)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", size=8)
        self.set_text_color(110, 110, 110)
        text = self.footer_text.replace("{page}", str(self.page_no())).replace("{pages}", "{nb}")
        self.cell(0, 5, text, align="C")
        self.set_text_color(0, 0, 0)


def _to_pdf(
    meta: dict[str, str], blocks: list[tuple[str, str]], *, language: str, signing_date: date
) -> bytes:
    pdf = _ContractPdf(_pdf_text(meta["header"]), _pdf_text(meta["footer"]))
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=22)
    pdf.set_creation_date(datetime.combine(signing_date, time(0), tzinfo=UTC))
    pdf.set_title(_pdf_text(meta["title"]))
    pdf.set_subject(_pdf_text(meta["header"]))
    pdf.set_creator("Ventanilla")
    pdf.set_lang(language)
    pdf.alias_nb_pages("{nb}")
    pdf.add_page()

    pdf.set_font("Helvetica", style="B", size=13)
    pdf.multi_cell(0, 6.5, _pdf_text(meta["title"]), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    for index, (kind, text) in enumerate(blocks):
        text = _pdf_text(text)
        if kind == "h":
            pdf.ln(2)
            pdf.set_font("Helvetica", style="B", size=10.5)
            pdf.multi_cell(0, 5.5, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(1)
        elif kind == "li":
            pdf.set_font("Helvetica", size=10)
            pdf.set_x(pdf.l_margin + 4)
            pdf.cell(5, 5, "\u2022")
            pdf.multi_cell(0, 5, text, align="J", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            last_item = index + 1 == len(blocks) or blocks[index + 1][0] != "li"
            pdf.ln(2.2 if last_item else 0.8)
        else:
            pdf.set_font("Helvetica", size=10)
            pdf.multi_cell(0, 5, text, align="J", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2.2)
    return bytes(pdf.output())
