"""The `gate` command as a user meets it: one-line errors, never a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.panel_support import csrf_of, free_port, serve_files, write_clip

GATE = [sys.executable, "-m", "gate"]


def gate(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    stdin: str | None = None,
):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    full_env.update(env or {})
    return subprocess.run(
        [*GATE, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
        input=stdin,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def assert_user_error(result: subprocess.CompletedProcess, cwd: Path, *words: str) -> None:
    """A mistake of the user's: one `error:` line, exit 2, and no crash log in `cwd`."""
    assert_one_line_error(result, *words)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert not (cwd / "gate-crash.log").exists()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bogus"], ["No such command 'bogus'", "gate --help)"]),
        (["user", "add", "x", "--role", "bogus"], ["--role", "gate user add --help)"]),
        (["bench", "station", "--n", "abc"], ["--n", "integer"]),
        (["user", "add", "bob"], ["Missing option '--role'"]),
        (["config", "check"], ["Missing argument 'file'"]),
        (["station", "emulate", "--bogus"], ["No such option: --bogus"]),
    ],
)
def test_a_usage_mistake_is_one_line_that_points_at_help(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    assert_user_error(gate(*args, cwd=tmp_path), tmp_path, *words)


def all_command_paths() -> list[list[str]]:
    """Every command and group of the real `gate` app, walked from its click tree."""
    import typer.main

    from gate.cli import app

    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        # Typer carries its own copy of click, so groups are recognised by shape.
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_help() -> None:
    paths = all_command_paths()
    assert ["station", "emulate"] in paths and ["user", "add"] in paths and ["eval"] in paths
    assert len(paths) >= 25
    for path in paths:
        result = gate(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage:" in result.stdout, path


def test_config_show_prints_the_embedded_defaults() -> None:
    result = gate("config", "show")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["camera"]["source"] == "simulated"
    assert shown["station"]["port"] == "emulated"
    assert shown["database_url"] is None  # SQLite in the data dir
    assert shown["server"]["host"] == "127.0.0.1" and shown["server"]["port"] == 8000


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:s3cret@db.example:5432/gate", "postgresql://postgres:***@db.example:5432/gate"),
        ("postgres:s3cret@db.example/gate", "<not a valid database URL>"),
    ],
)  # fmt: skip
def test_config_show_masks_the_database_password(url: str, shown: str) -> None:
    """As the admin settings page does: the output ends up in tickets and screenshots."""
    result = gate("config", "show", env={"GATE_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert json.loads(result.stdout)["database_url"] == shown


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "g.toml", "[policy]\nunlock_seconds = 4\n")
    result = gate(
        "config", "show", "--config", str(config), env={"GATE_POLICY__UNLOCK_SECONDS": "3"}
    )
    assert json.loads(result.stdout)["policy"]["unlock_seconds"] == 3


def test_config_check_accepts_the_shipped_example() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "gate.example.toml"
    result = gate("config", "check", str(example))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[policy]\nunlok_seconds = 3\n", ["unknown key", "policy.unlok_seconds"]),
        ("colour = 'red'\n", ["unknown key", "colour"]),
        ("[policy]\nunlock_seconds = 3600\n", ["policy.unlock_seconds"]),
        ("[policy]\nmask_policy = 'maybe'\n", ["policy.mask_policy"]),
        ("[camera\nsource=1", ["not valid TOML"]),
        ("[camera]\nroi = [0.5, 0.5, 0.2, 0.9]\n", ["camera.roi"]),
        ("[server]\ntrusted_proxies = ['proxy.local']\n", ["server.trusted_proxies"]),
        ("[server]\ntimezone = 'Asia/Saigon City'\n", ["server.timezone", "unknown time zone"]),
        ("[server]\nkiosk_addresses = ['kiosk.local']\n", ["server.kiosk_addresses"]),
        # Under a millisecond the wire says 0 and the station refuses every unlock.
        ("[policy]\nunlock_seconds = 0.0004\n", ["policy.unlock_seconds", "1"]),
        # Shorter than a missed frame, every visit ends before it is decided.
        ("[policy]\nleave_seconds = 0.001\n", ["policy.leave_seconds", "0.5"]),
        ("[policy]\nleave_seconds = 1\n[camera]\nfps = 2\n", ["policy.leave_seconds", "1.5 s"]),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, words: list[str]) -> None:
    config = write(tmp_path / "bad.toml", text)
    assert_one_line_error(gate("config", "check", str(config)), *words)
    assert_one_line_error(gate("run", "--config", str(config)), *words)


@pytest.mark.parametrize(
    "variable", ["GATE_CAMERA", "GATE_SERVER__KIOSK_ADDRESSES", "GATE_CAMERA__ROI"]
)
def test_an_environment_value_that_is_not_json_names_its_variable(
    tmp_path: Path, variable: str
) -> None:
    """A section, a list or a tuple set from the environment is JSON; anything else is
    named by its variable, not by the library's internal error."""
    result = gate("config", "show", env={variable: "garbage"}, cwd=tmp_path)
    assert_user_error(result, tmp_path, variable, "not valid JSON")


def test_json_in_the_environment_still_sets_sections_and_lists() -> None:
    env = {"GATE_CAMERA": '{"source": "0"}', "GATE_SERVER__KIOSK_ADDRESSES": '["10.0.0.5"]'}
    shown = json.loads(gate("config", "show", env=env).stdout)
    assert shown["camera"]["source"] == "0"
    assert shown["server"]["kiosk_addresses"] == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("GATE_UNLOCK_SECONDS", "GATE_POLICY__UNLOCK_SECONDS"),
        ("GATE_POLICY_UNLOCK_SECONDS", "GATE_POLICY__UNLOCK_SECONDS"),
        ("gate_data_dri", "GATE_DATA_DIR"),
        ("GATE_POLICY__UNLOK_SECONDS", "GATE_POLICY__UNLOCK_SECONDS"),
    ],
)
def test_an_unknown_environment_variable_is_one_line_naming_it(
    tmp_path: Path, variable: str, meant: str
) -> None:
    """A typo in a variable is an error, as in the file, not a silent fall back to the default."""
    result = gate("config", "show", env={variable: "4"}, cwd=tmp_path)
    assert_user_error(result, tmp_path, variable.upper(), f"did you mean {meant}?")
    assert_one_line_error(gate("run", env={variable: "4"}), variable.upper())


def test_missing_config_file_is_one_line() -> None:
    assert_one_line_error(gate("run", "--config", "/nonexistent/gate.toml"), "not found")


@pytest.mark.parametrize("command", [["run"], ["user", "list"], ["config", "show"]])
def test_an_unreadable_config_file_is_one_line(command: list[str]) -> None:
    """A config the service user may not read (here a file every read of fails, which
    holds even for root) is named in one line, not in a usage box."""
    result = gate(*command, "--config", "/proc/self/mem")
    assert_one_line_error(result, "cannot read config file /proc/self/mem")
    assert gate("config", "check", "/proc/self/mem").stderr == result.stderr


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("not a url s3cret", "not a valid database URL"),
        ("postgresql://nobody:s3cret@127.0.0.1:1/none", "cannot open database"),
        ("mysql+nosuchdriver://x:s3cret@y/z", "not supported"),
    ],
)
def test_bad_database_url_is_one_line(tmp_path: Path, url: str, word: str) -> None:
    """...and never shows the password it may hold (a terminal, a log, a screenshot)."""
    env = {"GATE_DATABASE_URL": url, "GATE_DATA_DIR": str(tmp_path)}
    for command in (["db", "upgrade"], ["run"]):
        result = gate(*command, env=env)
        assert_one_line_error(result, word)
        assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "purge"], ["user", "list"]])
def test_a_file_that_is_no_database_is_one_line_and_left_alone(
    tmp_path: Path, command: list[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = write(data / "gate.toml", "[policy]\nunlock_seconds = 4\n")
    env = {"GATE_DATABASE_URL": f"sqlite:///{config}", "GATE_DATA_DIR": str(data)}
    result = gate(*command, env=env, cwd=tmp_path)
    assert_user_error(result, tmp_path, "cannot open database", "file is not a database")
    assert config.read_text(encoding="utf-8") == "[policy]\nunlock_seconds = 4\n"
    assert [p.name for p in data.iterdir()] == ["gate.toml"]


def test_simulated_visitors_never_reach_a_real_door(tmp_path: Path) -> None:
    """A config that names the door's serial port but keeps the default, simulated camera
    is refused, by `gate run` before anything opens and by `gate config check`."""
    env = {"GATE_DATA_DIR": str(tmp_path), "GATE_STATION__PORT": "/dev/ttyACM0"}
    assert_one_line_error(gate("run", env=env), "simulated", "/dev/ttyACM0", "real door")
    config = write(tmp_path / "gate.toml", '[station]\nport = "/dev/ttyACM0"\n')
    assert_one_line_error(gate("config", "check", str(config)), "simulated", "real door")


def test_the_demo_keeps_off_an_installed_gates_log_and_staff(tmp_path: Path) -> None:
    """The demo logs scripted visitors and resets admin's password, so it refuses a
    database that holds another gate's log or staff it did not create, and changes nothing."""
    from gate.config import Settings
    from gate.demo import claim_database, demo_settings
    from gate.server.users import create_user, verify_login
    from gate.store.db import open_database
    from gate.store.records import ensure_gate, entries_since

    url = f"sqlite:///{tmp_path / 'gate.db'}"
    engine = open_database(url)
    create_user(engine, "admin", "admin", "the real admin's password")
    env = {"GATE_DATA_DIR": str(tmp_path)}
    assert_one_line_error(gate("demo", "--duration", "1", env=env), "staff", "data dir of its own")
    ensure_gate(engine, "main-door")
    assert_one_line_error(gate("demo", "--duration", "1", env=env), "gate main-door", "admin")
    assert verify_login(engine, "admin", "the real admin's password").user is not None
    assert entries_since(engine, "demo", datetime(2000, 1, 1, tzinfo=UTC)) == []

    # An empty database becomes the demo's, and staff added to the demo's panel keep it so.
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    settings = demo_settings(Settings(data_dir=demo_dir))
    claim_database(settings)
    create_user(open_database(settings.effective_database_url), "guard1", "security", "pw pw pw pw")
    claim_database(settings)


@pytest.mark.parametrize("where", ["environment", "config file"])
def test_the_demos_hint_gives_it_a_database_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """With database_url set, the suggested GATE_DATA_DIR alone still led to the installed
    gate's database, and the demo refused again."""
    from gate.config import load_settings
    from gate.demo import claim_database, demo_settings
    from gate.server.users import create_user
    from gate.store.db import open_database

    installed = f"sqlite:///{tmp_path / 'installed.db'}"
    create_user(open_database(installed), "admin", "admin", "the real admin's password")
    config = write(tmp_path / "gate.toml", f'database_url = "{installed}"\n')
    args, env = ["--config", str(config)], {}
    if where == "environment":
        args, env = [], {"GATE_DATABASE_URL": installed}
    result = gate("demo", "--duration", "1", *args, env=env | {"GATE_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "data dir of its own")
    hint = re.search(r"\(((?:GATE_\w+=\S+ )+)gate demo\)", result.stderr)
    assert hint, result.stderr

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for assignment in hint.group(1).split():  # as the user would run it, in a folder of ours
        name, value = assignment.split("=", 1)
        monkeypatch.setenv(name, value.replace("/tmp/gate-demo", str(tmp_path / "demo")))
    claim_database(demo_settings(load_settings(config if args else None)))


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "")
    env = {"GATE_DATA_DIR": str(blocker / "data")}  # a folder inside a file: no one can write
    assert_one_line_error(gate("run", env=env), "data dir", "not writable")
    assert_one_line_error(gate("demo", "--duration", "1", env=env), "data dir", "not writable")


@pytest.mark.parametrize("command", [["run"], ["demo"]])
def test_a_panel_port_in_use_is_one_line_before_anything_starts(
    tmp_path: Path, command: list[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        env = {"GATE_DATA_DIR": str(tmp_path), "GATE_SERVER__PORT": port}
        result = gate(*command, env=env)
    assert_one_line_error(result, f"cannot serve the panel on 127.0.0.1:{port}", "in use")
    assert result.stdout == ""  # no panel address, no demo login for a panel that never came


def test_the_demo_announces_its_login_only_once_it_is_up(tmp_path: Path) -> None:
    """Without models the demo cannot start, so it prints no login for it."""
    result = gate("demo", env={"GATE_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "gate models fetch")
    assert "login" not in result.stdout


def test_a_missing_video_file_is_one_line(tmp_path: Path) -> None:
    """A file that is not there is a typo in the config, not a camera still booting."""
    env = {"GATE_DATA_DIR": str(tmp_path), "GATE_CAMERA__SOURCE": "/nonexistent/clip.mp4"}
    assert_one_line_error(gate("run", env=env), "video", "not found")


def wait_for(fetch: Callable[[], Any], check: Callable[[Any], bool], seconds: float) -> Any:
    """Poll ``fetch`` until ``check`` accepts its value; the last value either way."""
    deadline = time.monotonic() + seconds
    value = fetch()
    while not check(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = fetch()
    return value


@pytest.mark.slow
def test_a_camera_that_is_not_there_yet_leaves_the_gate_up_and_degraded(
    tmp_path: Path, data_dir: Path
) -> None:
    """A network camera that boots slower than the gate (after a power cut): the gate
    runs DEGRADED with its panel and a camera_offline alert, instead of exiting (and
    crash-looping under systemd), and picks the camera up once it answers."""
    write_clip(tmp_path / "cam.avi")
    camera_port, panel_port = free_port(), free_port()
    env = {
        "GATE_DATA_DIR": str(data_dir),
        "GATE_SERVER__PORT": str(panel_port),
        "GATE_CAMERA__SOURCE": f"http://127.0.0.1:{camera_port}/cam.avi",
    }
    added = gate("user", "add", "guard", "--role", "security", "--password-stdin",
                 env=env, stdin="guard's password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")} | env
    process = subprocess.Popen(
        [*GATE, "run"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        client = httpx2.Client(base_url=f"http://127.0.0.1:{panel_port}", timeout=10)

        def login_page() -> httpx2.Response | None:
            assert process.poll() is None, process.communicate()[1]
            try:
                return client.get("/login")
            except httpx2.HTTPError:
                return None

        page = wait_for(login_page, lambda r: r is not None, 120)
        assert page is not None, "the panel never came up"
        login = {
            "username": "guard",
            "password": "guard's password",
            "csrf_token": csrf_of(page.text),
        }
        client.post("/login", data=login)

        def state() -> dict[str, Any]:
            return client.get("/api/state").json()

        degraded = wait_for(state, lambda s: s["mode"] == "degraded", 30)
        assert degraded["mode"] == "degraded" and not degraded["camera"]["healthy"], degraded
        assert "camera_offline" in [a["kind"] for a in client.get("/api/alerts").json()]

        with serve_files(tmp_path, camera_port):
            back = wait_for(state, lambda s: s["camera"]["healthy"], 60)
            assert back["camera"]["healthy"] and back["mode"] == "normal", back
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err


def test_a_models_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    result = gate("models", "fetch", "--data-dir", "/proc/x", cwd=tmp_path)  # not even for root
    assert_user_error(result, tmp_path, "data dir /proc/x/models", "not writable")


def test_a_damaged_facemesh_model_is_one_line_and_closes_the_detector(
    tmp_path: Path, models_dir: Path
) -> None:
    """The detector is open when the FaceMesh check fails; left open, MediaPipe's
    finaliser printed a traceback at exit after the one-line error."""
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    detector = "face_detector_short_range.tflite"
    (models / detector).symlink_to(models_dir / detector)
    (models / "face_landmark.tflite").write_bytes(b"")
    env = {"GATE_DATA_DIR": str(tmp_path / "data")}
    result = gate("bench", "decision", "--visitors", "1", env=env, cwd=tmp_path)
    assert_user_error(result, tmp_path, "FaceMesh", "face_landmark.tflite", "SHA-256")


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_eval_refuses_a_limit_below_one(tmp_path: Path, data_dir: Path, limit: str) -> None:
    """-1 evaluated nothing and exited 0."""
    import cv2
    import numpy as np

    (tmp_path / "faces" / "with_mask").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces" / "with_mask" / "face.jpg"), np.zeros((64, 64, 3), np.uint8))
    faces, models = str(tmp_path / "faces"), str(data_dir)
    result = gate("eval", faces, "--limit", limit, "--data-dir", models, cwd=tmp_path)
    assert_user_error(result, tmp_path, f"--limit {limit}", "at least 1")


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 6.0])
def test_ctrl_c_at_any_point_ends_quietly(tmp_path: Path, delay: float) -> None:
    """An interrupt during the seconds of start-up imports, or later (here the command
    waits for a password), exits 130 with no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    command = [*GATE, "user", "add", "bob", "--role", "manager", "--password-stdin"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env | {"GATE_DATA_DIR": str(tmp_path)}, cwd=tmp_path,
        # As at a terminal: a suite run in the background (CI, nohup) ignores SIGINT, and
        # a child would inherit that and never see the Ctrl-C at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) <= 1, err
    assert not (tmp_path / "gate-crash.log").exists()


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    result = gate("db", "upgrade", env={"GATE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "entry" in result.stdout and (tmp_path / "gate.db").exists()


def test_the_emulator_names_a_link_or_log_it_cannot_write(tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "")
    for option in ("--link", "--actuation-log"):
        result = gate("station", "emulate", option, str(blocker / "station"), timeout=30)
        assert_one_line_error(result, "cannot start the emulator", str(blocker))


def test_a_bug_in_a_read_only_working_directory_still_leaves_its_traceback(
    tmp_path: Path,
) -> None:
    """systemd runs the gate in /opt, read-only: the crash log goes to the temp dir."""
    crash = "import gate.cli as c; c.app = lambda **_: 1 / 0; c.main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    result = subprocess.run(
        [sys.executable, "-c", crash],
        capture_output=True,
        text=True,
        cwd="/proc",  # not writable, not even for root
        env=env | {"TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])},
        timeout=60,
    )
    assert result.returncode == 3
    assert_one_line_error(result, "internal error: ZeroDivisionError", str(tmp_path))
    assert "ZeroDivisionError: division by zero" in (tmp_path / "gate-crash.log").read_text()


def test_a_bug_in_the_running_gate_leaves_its_traceback_in_the_gate_log(
    tmp_path: Path,
) -> None:
    """`gate run` logs to <data_dir>/gate.log, and so does its crash: under systemd
    (PrivateTmp) a crash file in the temp dir vanished with the restart."""
    data, work, temp = tmp_path / "data", tmp_path / "work", tmp_path / "tmp"
    for folder in (data, work, temp):
        folder.mkdir()
    crash = (
        "import gate.cli as c\n"
        "from gate.config import Settings\n"
        "def run(**_):\n"
        f"    c._log_to_file(Settings(data_dir={str(data)!r}))\n"
        "    1 / 0\n"
        "c.app = run\n"
        "c.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    result = subprocess.run(
        [sys.executable, "-c", crash],
        capture_output=True,
        text=True,
        cwd=work,
        env=env | {"TMPDIR": str(temp), "PYTHONPATH": str(Path(__file__).parents[1])},
        timeout=60,
    )
    assert result.returncode == 3
    assert_one_line_error(result, "internal error: ZeroDivisionError", str(data / "gate.log"))
    logged = (data / "gate.log").read_text(encoding="utf-8")
    assert "Traceback" in logged and "ZeroDivisionError: division by zero" in logged
    assert list(work.iterdir()) == list(temp.iterdir()) == []


def test_the_gate_log_is_rotated_so_it_never_fills_the_disk(tmp_path: Path) -> None:
    """gate run's log rolls over into at most LOG_FILE_BACKUPS old files (here with a
    2 kB limit instead of 10 MB, so a few hundred lines show it)."""
    flood = (
        "import logging, gate.cli as c\n"
        "from gate.config import Settings\n"
        "c.LOG_FILE_BYTES = 2000\n"
        f"c._log_to_file(Settings(data_dir={str(tmp_path)!r}))\n"
        "for i in range(500): logging.getLogger('gate.camera').warning('camera lost, retry %d', i)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    result = subprocess.run(
        [sys.executable, "-c", flood], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    from gate.cli import LOG_FILE_BACKUPS

    logs = sorted(p.name for p in tmp_path.glob("gate.log*"))
    assert logs == ["gate.log"] + [f"gate.log.{n}" for n in range(1, LOG_FILE_BACKUPS + 1)]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in logs)
    assert "retry 499" in (tmp_path / "gate.log").read_text(encoding="utf-8")


def test_db_purge_runs_the_same_retention_as_the_gate(tmp_path: Path) -> None:
    old_day = tmp_path / "snapshots" / "2020-01-01"
    old_day.mkdir(parents=True)
    (old_day / "orphan.jpg").write_bytes(b"jpeg")
    result = gate("db", "purge", env={"GATE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gate gate-1: deleted 0 entries and 1 snapshots"
    assert not old_day.exists()


def test_db_purge_deletes_only_the_configured_gates_entries(tmp_path: Path) -> None:
    """Two gates share the database; purging for one left the other without its log."""
    from gate.config import load_settings
    from gate.store import records
    from gate.store.db import open_database
    from gate.store.models import Entry

    engine = open_database(load_settings(data_dir=tmp_path).effective_database_url)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    for ref, gate_id in enumerate(("gate-1", "side-door")):
        records.ensure_gate(engine, gate_id)
        entry = Entry(gate_id=gate_id, unlock_ref=ref, outcome="admitted", seen_at=old)
        records.save_entry(engine, entry)
    result = gate("db", "purge", env={"GATE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gate gate-1: deleted 1 entries and 0 snapshots"
    assert [e.gate_id for e in records.entries_since(engine, "side-door", old)] == ["side-door"]
    assert records.entries_since(engine, "gate-1", old) == []
