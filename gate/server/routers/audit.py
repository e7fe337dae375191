"""The audit log: logins, overrides, acknowledgements and user changes, newest first."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate.server import queries, texts
from gate.server.filters import known_parameters_only
from gate.server.textinput import Text
from gate.server.web import MAX_ROW_ID, panel, render, require, translator
from gate.store.models import Role

router = APIRouter(prefix="/audit", dependencies=[Depends(require(Role.MANAGER))])
PAGE = 100


@router.get("", dependencies=[Depends(known_parameters_only)])
async def audit_page(
    request: Request,
    action: Annotated[Text(64), Query()] = "",
    before: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> Response:
    engine = panel(request).engine
    rows = await run_in_threadpool(queries.list_audit, engine, before, action or None, PAGE + 1)
    actions = await run_in_threadpool(queries.audit_actions, engine)
    older_url = None
    if len(rows) > PAGE:
        older_url = "/audit?" + urlencode(
            {**({"action": action} if action else {}), "before": rows[PAGE - 1].id}
        )
    _ = translator(request)
    return render(
        request,
        "audit.html",
        {
            "rows": rows[:PAGE],
            "older_url": older_url,
            "action": action,
            "actions": actions,
            "detail_text": lambda action, detail: texts.describe_audit_detail(action, detail, _),
            "reason_text": lambda action, reason: texts.describe_audit_reason(action, reason, _),
        },
    )
