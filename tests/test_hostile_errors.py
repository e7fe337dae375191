"""An unexpected error answers 500 with the security headers and a request id, and its
traceback lands in gate.log under that id, as uvicorn's own error log does (issue 21,
finding 5). The bug is made real: the runtime raises something that is no GateError."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import httpx2

from gate.server.app import SECURITY_HEADERS
from tests.panel_support import LiveServer, client_for, login, make_app

REQUEST_ID_RE = re.compile(r"request id ([0-9a-f]{16})")


def test_a_bug_answers_500_with_the_security_headers_and_a_request_id(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    runtime.refuse = RuntimeError("a bug in the runtime")  # type: ignore[assignment]
    form = {"reason": "parcel", "csrf_token": guard.headers["x-csrf-token"]}
    for answer in (
        guard.post("/api/overrides/unlock", json={"reason": "parcel"}),
        guard.post("/live/unlock", data=form, headers={"accept": "text/html"}),
    ):
        assert answer.status_code == 500
        for name, value in SECURITY_HEADERS:
            assert answer.headers[name.decode()] == value.decode()
        assert answer.text.count("\n") == 1 and "a bug" not in answer.text
        (request_id,) = REQUEST_ID_RE.findall(answer.text)
        assert answer.headers["x-request-id"] == request_id


def test_the_traceback_and_uvicorns_own_errors_reach_gate_log(tmp_path: Path) -> None:
    """Over real HTTP with the gate's own uvicorn set-up and a file handler on the root
    logger, as `gate run` has (gate/cli.py)."""
    app, runtime = make_app(tmp_path)
    gate_log = tmp_path / "gate.log"
    to_file = logging.FileHandler(gate_log, encoding="utf-8")
    logging.getLogger().addHandler(to_file)
    try:
        with LiveServer(app) as live, httpx2.Client(base_url=live.url) as client:
            client.headers["x-csrf-token"] = login(client, "security")
            runtime.refuse = RuntimeError("a bug in the runtime")  # type: ignore[assignment]
            answer = client.post("/api/overrides/unlock", json={"reason": "parcel"})
            with socket.create_connection(("127.0.0.1", live.port), timeout=5) as raw:
                raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                assert raw.recv(1024).startswith(b"HTTP/1.1 400")
    finally:
        logging.getLogger().removeHandler(to_file)
        to_file.close()
    (request_id,) = REQUEST_ID_RE.findall(answer.text)
    text = gate_log.read_text(encoding="utf-8")
    assert f"request {request_id}: POST '/api/overrides/unlock' failed" in text
    assert "Traceback" in text and "RuntimeError: a bug in the runtime" in text
    assert "Invalid HTTP request received" in text  # uvicorn's, not only on stderr
