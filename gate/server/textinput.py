"""One way in for text: every string the panel takes from a request passes through here.

Forms, query strings, JSON bodies, path parameters and the headers the panel reads
are declared with ``Text`` (or ``Secret`` for a password), so FastAPI runs
``clean_text`` on each before a route sees it. A value is composed (NFC), then
refused when it carries a character no keyboard types into a form: NUL (which
PostgreSQL cannot store), other C0 and C1 controls (an Escape stored in a reason
rewrites a terminal that reads the audit later), direction overrides and isolates
(a reason that reads backwards), zero-width characters (two names that look the
same) and lone surrogates (no UTF-8 for them). The refusal is a 422 that names
the field, in the user's language on pages.

Identities (usernames) are compared with ``identity``: one rule for every
"not yourself" check and every lookup.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

from gate.server.i18n import N_

# NUL, C0 and DEL, C1; LRM, RLM, ALM and the zero-width characters; the embeddings,
# overrides and isolates; word joiner and invisible operators; the byte order mark;
# lone surrogates (JSON's "\ud800" decodes to one).
FORBIDDEN_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)
# A password may hold anything printable: only what no keyboard sends is refused.
FORBIDDEN_IN_SECRET_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
UNSAFE_TEXT = N_(
    "contains a character that is not allowed here (a control character such as NUL or "
    "Escape, a text-direction override or an invisible character)"
)


def clean_text(value: str) -> str:
    """``value`` composed (NFC), or a validation error when it holds a forbidden character."""
    return _clean(value, FORBIDDEN_RE)


def clean_secret(value: str) -> str:
    """A password: composed (NFC), so both ways a Vietnamese keyboard writes "ậ" match."""
    return _clean(value, FORBIDDEN_IN_SECRET_RE)


def _clean(value: str, forbidden: re.Pattern[str]) -> str:
    if forbidden.search(value):  # before NFC, which would fail on a lone surrogate
        raise PydanticCustomError("unsafe_text", UNSAFE_TEXT)
    return unicodedata.normalize("NFC", value)


def Text(max_length: int) -> object:
    """A cleaned string of at most ``max_length`` characters, for ``Annotated[...]``."""
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(clean_text)]


def Secret(max_length: int) -> object:
    """A cleaned password of at most ``max_length`` characters."""
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(clean_secret)]


def identity(username: str) -> str:
    """The key an account is known by: composed, trimmed and case-folded. " Admin" and
    "ADMIN" are the admin; two names are the same account exactly when their keys match."""
    return unicodedata.normalize("NFC", username).strip().casefold()
