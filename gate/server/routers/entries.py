"""The manager's entry log: filter, page, look at one visit, export to CSV.

Snapshot images are served from here, not from a static mount: only a logged-in
manager gets them, and only files that really lie inside the data directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as UrlPart
from fastapi.responses import FileResponse, Response
from sqlalchemy import Row
from starlette.concurrency import run_in_threadpool

from gate.server import queries, texts
from gate.server.csvexport import csv_download
from gate.server.filters import (
    EntryQuery,
    known_parameters_only,
    parse_entry_filter,
    parse_page_position,
)
from gate.server.i18n import N_
from gate.server.textinput import Text
from gate.server.web import panel, render, require, translator
from gate.store.models import Outcome, Role

router = APIRouter(prefix="/entries", dependencies=[Depends(require(Role.MANAGER))])

QueryText = Annotated[Text(64), Query()]
EntryId = Annotated[Text(64), UrlPart()]
PAGE_SIZES = (25, 50, 100, 200)
SNAPSHOT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
EXPORT_HEADER = (
    "id",
    "gate",
    "seen",
    "outcome",
    "outcome_text",
    "mask_label",
    "mask_score",
    "first_label",
    "first_decided",
    "sanitized",
    "door_opened",
    "decided",
    "sanitized_at",
    "unlocked",
    "door_opened_at",
    "finished",
)


def entry_query(
    start: Annotated[Text(32), Query(alias="from")] = "",
    end: Annotated[Text(32), Query(alias="to")] = "",
    outcome: QueryText = "",
    gate: QueryText = "",
) -> EntryQuery:
    """The filter fields shared by the page, the export and the API."""
    return EntryQuery(start, end, outcome, gate)


Filters = Annotated[EntryQuery, Depends(entry_query)]


@router.get("", dependencies=[Depends(known_parameters_only)])
async def entries_page(
    request: Request,
    query: Filters,
    before: QueryText = "",
    after: QueryText = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    p = panel(request)
    gates = await run_in_threadpool(queries.gate_ids, p.engine)
    flt = parse_entry_filter(query, p.zone, gates)
    older_than, newer_than = parse_page_position(before, after)
    page = await run_in_threadpool(
        queries.list_entries, p.engine, flt, limit, older_than, newer_than
    )
    params = {**query.params(), "limit": str(limit)}
    return render(
        request,
        "entries.html",
        {
            "page": page,
            "query": query,
            "gates": gates,
            "outcomes": list(Outcome),
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "newer_url": page.newer
            and "/entries?" + urlencode({**params, "after": page.newer.encode()}),
            "older_url": page.older
            and "/entries?" + urlencode({**params, "before": page.older.encode()}),
        },
    )


@router.get("/export.csv", dependencies=[Depends(known_parameters_only)])
async def export_csv(request: Request, query: Filters) -> Response:
    """Stream every matching entry; the sync generator runs in the threadpool batch by batch."""
    p = panel(request)
    gates = await run_in_threadpool(queries.gate_ids, p.engine)
    flt = parse_entry_filter(query, p.zone, gates)
    stamp = datetime.now(p.zone).strftime("%Y%m%d-%H%M")
    translate = translator(request)

    def readable(batches: Iterator[Sequence[Row[Any]]]) -> Iterator[list[tuple[Any, ...]]]:
        """Each row with its outcome also in words, in the manager's language: the code
        column stays for formulas and scripts, the words are for reading."""
        for rows in batches:
            yield [
                (*row[:4], texts.label(texts.OUTCOMES, row[3], translate), *row[4:]) for row in rows
            ]

    return csv_download(
        f"entries-{stamp}.csv", EXPORT_HEADER, readable(queries.iter_entry_batches(p.engine, flt)),
        p.zone, p.settings.server.csv_separator,
    )  # fmt: skip


@router.get("/{entry_id}")
async def entry_detail(request: Request, entry_id: EntryId) -> Response:
    p = panel(request)
    entry = await run_in_threadpool(queries.get_entry, p.engine, entry_id)
    if entry is None:
        raise HTTPException(404, N_("no such entry"))
    return render(
        request,
        "entry.html",
        {
            "entry": entry,
            "has_snapshot": snapshot_file(p.settings.data_dir, entry.snapshot_path) is not None,
        },
    )


@router.get("/{entry_id}/snapshot")
async def entry_snapshot(request: Request, entry_id: EntryId) -> Response:
    p = panel(request)
    entry = await run_in_threadpool(queries.get_entry, p.engine, entry_id)
    path = snapshot_file(p.settings.data_dir, entry.snapshot_path if entry else None)
    if path is None:
        raise HTTPException(404, N_("no snapshot kept for this entry"))
    return FileResponse(
        path,
        media_type=SNAPSHOT_TYPES[path.suffix.lower()],
        headers={"Cache-Control": "private, no-store"},
    )


def snapshot_file(data_dir: Path, stored: str | None) -> Path | None:
    """The snapshot's real path if it is an image file inside data_dir, else None.

    The runtime stores ``str(data_dir / "snapshots" / ...)``, so a relative
    path is relative to the working directory, like data_dir itself. It is
    resolved (following links) before the check, so neither '../' nor a
    symlink can lead outside the data directory.
    """
    if not stored:
        return None
    root = data_dir.resolve()
    path = Path(stored).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in SNAPSHOT_TYPES:
        return None
    return path if path.is_file() else None
