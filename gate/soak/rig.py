"""The processes and resources the soak runs the gate among, each with its fault levers.

A PostgreSQL server of its own (`initdb`/`pg_ctl` in a temp dir), a small tmpfs
for the data dir (so a full disk hurts nobody else), the emulated station in
its own process, a wall clock the soak can step (libfaketime), and a
supervisor that restarts the gate as systemd's `Restart=always` would.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gate.errors import GateError

FAKETIME_LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
RESTART_SECONDS = 1.0  # systemd's RestartSec in deploy/


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Postgres:
    """A throwaway PostgreSQL cluster; `restart()` is the fault, a fast shutdown and start."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise GateError("the PostgreSQL soak needs pg_ctl (Debian: postgresql)")
        self.bin = Path(found[-1]).parent
        self.folder = folder
        self.data = folder / "cluster"
        self.port = free_port()
        # initdb refuses to run as root: the cluster then belongs to the postgres user.
        self._user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/soak"

    def _run(self, *args: str, check: bool = True) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise GateError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            # The soak's own temp dir is private (0700): the server's user must pass through.
            parent = self.folder.parent
            os.chmod(parent, parent.stat().st_mode | 0o011)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._ctl("start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "soak")

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
            "-o", options, "-w", "-m", "fast", action,
        )  # fmt: skip

    def stop(self) -> None:
        self._ctl("stop")

    def resume(self) -> None:
        """Start the stopped server again, on the same data and port."""
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def wal_bytes(self) -> int:
        return _tree_size(self.data / "pg_wal")

    def pids(self) -> list[int]:
        """The postmaster and its children, for the samples."""
        try:
            main = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [main, *_children(main)]


def _children(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry))
    return pids


class DataDisk:
    """A small tmpfs holding the gate's data dir; `fill()` takes every free byte."""

    def __init__(self, mount: Path, megabytes: int) -> None:
        self.mount = mount
        self.megabytes = megabytes
        self.ballast = mount / "ballast"
        self.mounted = False

    def start(self) -> None:
        self.mount.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.megabytes}m", "soak-data", str(self.mount)],
                check=True, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise GateError(
                f"the soak mounts a small tmpfs for its data dir (the disk-full fault) and "
                f"could not: {detail.strip()} (run it as root, or in a container as root)"
            ) from None
        self.mounted = True

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # in large pieces, then the last few bytes
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount)], check=False, timeout=30)
            self.mounted = False


class Clock:
    """The gate's wall clock, through libfaketime: an offset in seconds the soak can step.
    The monotonic clock stays real, as NTP leaves it."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.library = next((p for p in FAKETIME_LIBRARIES if Path(p).exists()), None)
        self.offset = 0
        self.set(0)

    @property
    def available(self) -> bool:
        return self.library is not None

    def set(self, seconds: int) -> None:
        temporary = self.file.with_suffix(".new")
        temporary.write_text(f"{seconds:+d}\n")
        temporary.replace(self.file)
        self.offset = seconds

    def environment(self) -> dict[str, str]:
        if self.library is None:
            return {}
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_CACHE_DURATION": "1",
        }


class Station:
    """`gate station emulate` in its own process: world commands on stdin, answers on stdout."""

    def __init__(self, folder: Path) -> None:
        self.link = folder / "station"
        self.actuations = folder / "actuations.jsonl"
        self._lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gate", "station", "emulate", "--link", str(self.link),
             "--actuation-log", str(self.actuations)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            raise GateError("the emulated station did not start")

    def send(self, command: str) -> str:
        assert self.process is not None and self.process.stdin and self.process.stdout
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send("quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Life:
    """One run of the gate process, from start to exit."""

    started: float
    pid: int
    ended: float | None = None
    code: int | None = None
    stderr_tail: str = ""


@dataclass
class Supervisor:
    """Runs `gate run` and starts it again whenever it exits, until told to stop."""

    config: Path
    environment: dict[str, str]
    folder: Path
    lives: list[Life] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-supervisor", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def kill(self) -> bool:
        """SIGKILL the gate: no clean-up, no lock sent, as a power cut to the host."""
        pid = self.pid
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        environment = {**os.environ, **self.environment}
        number = 0
        while not self._stop.is_set():
            number += 1
            errors = self.folder / f"gate-{number}.stderr"
            with open(errors, "wb") as stderr:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "gate", "run", "--config", str(self.config)],
                    env=environment, stdout=subprocess.DEVNULL, stderr=stderr,
                )  # fmt: skip
                life = Life(time.time(), self._process.pid)
                self.lives.append(life)
                code = self._process.wait()
            life.ended, life.code = time.time(), code
            life.stderr_tail = errors.read_text(errors="replace")[-400:].strip()
            errors.unlink(missing_ok=True)
            self._stop.wait(RESTART_SECONDS)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
