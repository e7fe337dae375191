"""Vietnamese and English for every page, from Babel catalogs.

Message ids are the English text. Catalogs live in ``gate/server/locale`` and
both the .po and the compiled .mo are committed, so a gate runs without a
build step. After changing any text::

    cd gate/server
    ../../.venv/bin/pybabel extract -F babel.cfg -k N_ --no-location --sort-output \
        --project "Entry Gate" -o locale/messages.pot .
    ../../.venv/bin/pybabel update --no-fuzzy-matching -w 100 -i locale/messages.pot -d locale
    # translate the new entries in locale/vi/LC_MESSAGES/messages.po, then
    ../../.venv/bin/pybabel compile -d locale

tests/test_panel_i18n.py fails when a text has no Vietnamese or a .mo is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

from gate.store.models import as_utc

LOCALE_DIR = Path(__file__).with_name("locale")
LANGUAGES = ("vi", "en")
LANG_COOKIE = "gate_lang"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # sorts as text; the same for both languages


def N_(message: str) -> str:
    """Mark a text for extraction where it is defined; it is translated where shown."""
    return message


@cache
def translations(lang: str) -> NullTranslations:
    if lang not in LANGUAGES:
        lang = LANGUAGES[0]
    return Translations.load(str(LOCALE_DIR), [lang], domain="messages")


def translate(lang: str, message: str, **values: object) -> str:
    """Translate, then fill %(name)s placeholders (templates escape the result)."""
    return fill(translations(lang).gettext(message), values)


def fill(text: str, values: Mapping[str, object]) -> str:
    """Put values into %(name)s placeholders; with none, the text as it is, so a literal
    "%" in a message without placeholders stays."""
    return text % values if values else text


def number(lang: str, value: float, digits: int) -> str:
    """A decimal as the reader writes it: 95,9 in Vietnamese, 95.9 in English."""
    return format_decimal(value, format=f"0.{'0' * digits}", locale=lang)


def pick_language(cookie: str | None, default: str) -> str:
    return cookie if cookie in LANGUAGES else default


def local_time(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return ""
    return as_utc(moment).astimezone(zone).strftime(DATETIME_FORMAT)
