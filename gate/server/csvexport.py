"""Streaming CSV for spreadsheets: UTF-8 with BOM, local times, no formula injection.

Excel splits a double-clicked CSV by the system's list separator, which is ";"
wherever the decimal mark is a comma (Vietnamese among them). With the ";"
setting, numbers get a decimal comma too, so Excel reads them as numbers.

A cell that a spreadsheet would read as a formula (starting with = + - @, tab
or carriage return) gets a leading apostrophe, per OWASP's CSV-injection
advice. Gate ids and labels are ours today, but alert messages and future
columns may carry visitor-influenced text, so every text cell is treated alike.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.responses import StreamingResponse

from gate.server.i18n import DATETIME_FORMAT
from gate.store.models import as_utc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"  # lets Excel open UTF-8 Vietnamese text correctly


def safe_cell(value: Any, zone: ZoneInfo, decimal_comma: bool = False) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and decimal_comma:
        return repr(value).replace(".", ",")
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return as_utc(value).astimezone(zone).strftime(DATETIME_FORMAT)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_chunks(
    header: Sequence[str],
    batches: Iterable[Sequence[Sequence[Any]]],
    zone: ZoneInfo,
    separator: str = ",",
) -> Iterator[bytes]:
    """One encoded chunk per batch of rows, so memory stays at one batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, lineterminator="\r\n")
    comma = separator == ";"
    buffer.write(BOM)
    writer.writerow([safe_cell(h, zone) for h in header])
    for rows in batches:
        writer.writerows([safe_cell(v, zone, comma) for v in row] for row in rows)
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def csv_download(
    filename: str,
    header: Sequence[str],
    batches: Iterable[Sequence[Sequence[Any]]],
    zone: ZoneInfo,
    separator: str = ",",
) -> StreamingResponse:
    """A streamed CSV attachment that browsers and proxies do not cache."""
    return StreamingResponse(
        csv_chunks(header, batches, zone, separator),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
