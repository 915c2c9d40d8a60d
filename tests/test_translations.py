"""Every customer-facing message exists in Spanish and English: no untranslated or fuzzy entry."""

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"


@pytest.mark.parametrize("language", ["es", "en"])
def test_catalog_is_complete(language):
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle)

    untranslated = [message.id for message in catalog if message.id and not message.string]
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    assert untranslated == []
    assert fuzzy == []


@pytest.mark.parametrize("language", ["es", "en"])
def test_compiled_catalog_matches_its_source(language):
    from babel.messages.mofile import read_mo

    folder = TRANSLATIONS / language / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as po, (folder / "messages.mo").open("rb") as mo:
        source = {message.id: message.string for message in read_po(po) if message.id}
        compiled = {message.id: message.string for message in read_mo(mo) if message.id}

    assert compiled == source


def test_catalog_template_lists_every_message_in_the_code():
    from babel.messages.extract import extract_from_dir

    root = TRANSLATIONS.parent
    in_code = {
        message
        for folder in ("backoffice", "customer_api")
        for _, _, message, _, _ in extract_from_dir(
            root / folder, method_map=[("**.py", "python")], keywords={"_l": None, "lazy_gettext": None}
        )
    }
    with (TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog_ids = {message.id for message in read_po(handle) if message.id}

    assert in_code - catalog_ids == set()
