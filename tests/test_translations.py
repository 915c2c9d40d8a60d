"""Every message, customer-facing and in the back office, exists in Spanish and English: no
untranslated or fuzzy entry, and none missing from the catalog."""

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"


@pytest.mark.parametrize("language", ["es", "en"])
def test_catalog_is_complete(language):
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle)

    untranslated = [message.id for message in catalog if message.id and not all(_forms(message.string))]
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    assert untranslated == []
    assert fuzzy == []


def _forms(string):
    return [string] if isinstance(string, str) else list(string or [""])


def _plain(value):
    """Plural entries carry (singular, plural) ids and one string per form."""
    return value if isinstance(value, str) else tuple(value)


@pytest.mark.parametrize("language", ["es", "en"])
def test_compiled_catalog_matches_its_source(language):
    from babel.messages.mofile import read_mo

    folder = TRANSLATIONS / language / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as po, (folder / "messages.mo").open("rb") as mo:
        source = {_plain(message.id): _plain(message.string) for message in read_po(po) if message.id}
        compiled = {_plain(message.id): _plain(message.string) for message in read_mo(mo) if message.id}

    assert compiled == source


def test_catalog_lists_every_message_in_the_code_and_templates():
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

    root = TRANSLATIONS.parent
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
    sources = [
        (root / "backoffice", [("**.py", "python")]),
        (root / "customer_api", [("**.py", "python")]),
        (root / "templates", [("**.html", "jinja2")]),
    ]
    in_code = {
        message if isinstance(message, str) else message[0]
        for folder, method_map in sources
        for _, _, message, _, _ in extract_from_dir(folder, method_map=method_map, keywords=keywords)
    }
    with (TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog_ids = {
            message.id if isinstance(message.id, str) else message.id[0] for message in read_po(handle)
        }

    assert sorted(in_code - catalog_ids) == []
