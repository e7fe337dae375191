"""The login throttle cannot be turned against an account's owner, and tells no one which
accounts exist (issue 21, finding 4)."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.panel_support import PASSWORD, client_for, csrf_of, make_app

ERROR_RE = re.compile(r'<p class="error"[^>]*>(.*?)</p>')


def attempt(client: TestClient, username: str, password: str) -> tuple[int, str, float]:
    """(status, the page's error text, seconds the answer took)."""
    token = csrf_of(client.get("/login").text)
    form = {"username": username, "password": password, "csrf_token": token}
    started = time.perf_counter()
    answer = client.post("/login", data=form, follow_redirects=False)
    took = time.perf_counter() - started
    return answer.status_code, "".join(ERROR_RE.findall(answer.text)), took


def test_guessing_from_one_address_for_an_hour_never_locks_the_owner_out(tmp_path: Path) -> None:
    """The tester's attack: five wrong passwords every five minutes from one address."""
    app, _runtime = make_app(tmp_path)
    throttle = app.state.panel.throttle
    attacker, owner = "198.51.100.66", "10.0.0.7"
    now = 0.0
    for _round in range(12):
        for _ in range(5):
            if not throttle.waiting("manager", attacker, now):
                throttle.failed("manager", attacker, now)
        now += 300
        assert not throttle.waiting("manager", owner, now)
        assert not throttle.address_blocked(owner, now)
    assert attempt(client_for(app, host=owner), "manager", PASSWORD)[0] == 303


def test_wrong_password_throttled_and_unknown_user_answer_alike_and_as_slowly(
    tmp_path: Path,
) -> None:
    app, _runtime = make_app(tmp_path)
    throttled = client_for(app, host="10.3.0.1")
    for _ in range(app.state.panel.throttle.free):
        attempt(throttled, "manager", "not the password")
    rounds = 5
    cases: dict[str, list[tuple[int, str, float]]] = {"wrong": [], "throttled": [], "unknown": []}
    for n in range(rounds):  # interleaved, so a busy moment of the machine hits all three
        cases["wrong"].append(attempt(client_for(app, host=f"10.4.0.{n}"), "manager", "nope" * 3))
        cases["throttled"].append(attempt(throttled, "manager", PASSWORD))
        cases["unknown"].append(attempt(client_for(app, host=f"10.5.0.{n}"), "nobody", "nope" * 3))
    answers = {(status, text) for results in cases.values() for status, text, _t in results}
    assert len(answers) == 1, answers
    ((status, text),) = answers
    assert status == 401 and text
    medians = {name: statistics.median(t for *_a, t in results) for name, results in cases.items()}
    print("login answer medians (ms):", {k: round(v * 1000, 1) for k, v in medians.items()})
    # A refusal that skipped the password hash answered in a fraction of the time.
    for name in ("throttled", "unknown"):
        assert 0.5 < medians[name] / medians["wrong"] < 2, medians
