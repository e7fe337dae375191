"""`gate eval` on small real subsets, the split rule, and corrupt inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gate.camera.data import in_test_split, read_class_folders, read_voc, select_split
from gate.camera.evaluate import evaluate
from gate.camera.models import fetch_models
from gate.errors import GateError

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
SCENES = DATASETS / "face-mask-scenes"
CROPS = DATASETS / "face-mask"


@pytest.fixture
def scenes() -> Path:
    """The shared evaluation data; CI and every developer machine have it beside the repo."""
    assert SCENES.is_dir(), f"{SCENES} is missing: the datasets live in ../shared/datasets"
    return SCENES


@pytest.fixture(scope="module")
def data_dir() -> Path:
    fetch_models(REPO / "var", progress=False, log=lambda _line: None)
    return REPO / "var"


def test_split_rule_is_stable_and_about_a_fifth() -> None:
    names = [f"img{i:05d}.jpg" for i in range(5000)]
    test = [n for n in names if in_test_split(n)]
    assert 0.18 < len(test) / len(names) < 0.22
    assert in_test_split("a/b/img00001.jpg") == in_test_split("img00001.png"), "by stem only"
    assert set(select_split([Path(n) for n in names], "test")) == {Path(n) for n in test}
    with pytest.raises(GateError, match="unknown split"):
        select_split([], "validation")


def test_validation_folds_cover_every_training_image_once() -> None:
    """Cross-validation folds and the default validation part come from one split position."""
    import numpy as np

    from gate.camera.data import split_position
    from gate.camera.train import ALWAYS_TRAIN, VAL_SEED, VAL_SHARE, Samples

    names = [f"img{i:05d}.jpg" for i in range(2000)]
    position = np.array([split_position(n, VAL_SEED) for n in names] + [ALWAYS_TRAIN] * 50)
    n = len(position)
    found = np.arange(n) % 7 != 0  # some faces the detector missed
    widths = np.where(np.arange(n) % 5 == 0, 30, 60)  # some too small to score
    samples = Samples(np.zeros((n, 1, 1, 3), np.uint8), np.zeros(n, int), widths, position, found)

    scored = found & (widths >= 40)
    seen = np.zeros(n, int)
    for fold in range(5):
        train, val = samples.parts(fold, 5)
        assert not (train & val).any() and train[-50:].all(), "crops always train"
        assert ((~train) & scored == val).all(), "held-out faces are scored when found and large"
        seen += ~train
        assert 0.16 < (~train[:-50]).mean() < 0.24
    assert (seen[:-50] == 1).all() and (seen[-50:] == 0).all()
    train, val = samples.parts()
    assert ((~train[:-50]) == (position[:-50] < VAL_SHARE)).all()
    assert in_test_split("img00007.jpg") == (split_position("img00007.jpg") < 0.2)


def test_held_out_scene_subset_gives_sane_numbers(data_dir: Path, scenes: Path) -> None:
    report = evaluate(scenes, data_dir, split="test", limit=25)
    assert report["kind"] == "voc" and report["n_images"] == 25 and report["n_faces"] > 20
    assert report["detection_recall"] > 0.7
    assert report["accuracy"] > 0.75
    assert report["end_to_end_accuracy"] <= report["accuracy"]
    matched = sum(sum(row.values()) for row in report["confusion"].values())
    assert matched == round(report["detection_recall"] * report["n_faces"])
    assert set(report["per_class"]) == {"mask", "incorrect_mask", "no_mask"}
    assert report["ms_per_image"] > 0


def test_crop_folders_with_synonyms_and_a_corrupt_file(
    data_dir: Path, tmp_path: Path, scenes: Path
) -> None:
    for name, source in (("with_mask", "with_mask"), ("without_mask", "without_mask")):
        (tmp_path / name).mkdir()
        for p in sorted((CROPS / source).iterdir())[:6]:
            shutil.copy(p, tmp_path / name / p.name)
    (tmp_path / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    report = evaluate(tmp_path, data_dir)
    assert report["kind"] == "crops"
    assert report["unreadable"] == ["broken.jpg"]
    assert report["n_faces"] == 12 and report["accuracy"] >= 0.75


def test_voc_with_corrupt_image_is_counted_not_fatal(
    data_dir: Path, tmp_path: Path, scenes: Path
) -> None:
    item = read_voc(scenes)[0]
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    shutil.copy(scenes / "annotations" / f"{item.image.stem}.xml", tmp_path / "annotations")
    (tmp_path / "images" / item.image.name).write_bytes(b"\x89PNG not really")
    report = evaluate(tmp_path, data_dir)
    assert report["unreadable"] == [item.image.name] and report["n_faces"] == 0


def test_bad_inputs_are_one_line_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(GateError, match="not found"):
        evaluate(tmp_path / "missing", data_dir)
    (tmp_path / "random").mkdir()
    with pytest.raises(GateError, match="no class folders"):
        read_class_folders(tmp_path / "random")
    (tmp_path / "voc" / "images").mkdir(parents=True)
    (tmp_path / "voc" / "annotations").mkdir()
    (tmp_path / "voc" / "annotations" / "x.xml").write_text("<annotation><object>")
    with pytest.raises(GateError, match="bad VOC annotation"):
        evaluate(tmp_path / "voc", data_dir)


def test_misses_are_written_as_crops_and_a_csv(data_dir: Path, tmp_path: Path) -> None:
    """Bare faces filed under with_mask must come back as misses, each with its crop."""
    import csv

    import cv2

    crops = tmp_path / "crops"
    for name in ("with_mask", "without_mask"):
        (crops / name).mkdir(parents=True)
        for p in sorted((CROPS / name).iterdir())[:4]:
            shutil.copy(p, crops / name / p.name)
    bare = sorted((CROPS / "without_mask").iterdir())[4:7]
    for p in bare:  # mislabelled on purpose
        shutil.copy(p, crops / "with_mask" / p.name)
    report = evaluate(crops, data_dir, misses=tmp_path / "misses")
    wrong = misclassified(report)
    assert report["misses"] == wrong >= 2, "most mislabelled bare faces are called no_mask"
    with (tmp_path / "misses" / "misses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == wrong
    assert {r["image"] for r in rows if r["called"] == "no_mask"} <= {
        f"with_mask/{p.name}" for p in bare
    }
    for r in rows:
        crop = tmp_path / "misses" / f"{r['truth']}-as-{r['called']}" / r["crop"]
        image = cv2.imread(str(crop))
        assert image is not None and image.shape == (160, 160, 3)
        assert (
            abs(sum(float(r[f"p_{c}"]) for c in ("mask", "incorrect_mask", "no_mask")) - 1) < 0.01
        )
    with pytest.raises(GateError, match="new or empty folder"):
        evaluate(crops, data_dir, misses=tmp_path / "misses")


def test_scene_misses_match_the_confusion(data_dir: Path, scenes: Path, tmp_path: Path) -> None:
    report = evaluate(scenes, data_dir, split="test", limit=25, misses=tmp_path / "m")
    wrong = misclassified(report)
    assert report["misses"] == wrong > 0
    crops = list((tmp_path / "m").rglob("*.jpg"))
    assert len(crops) == wrong and all(p.parent.name.count("-as-") == 1 for p in crops)


def test_a_crop_that_cannot_be_written_is_a_one_line_error(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full or read-only disk (simulated: imwrite reports failure) stops with one line."""
    import gate.camera.evaluate as evaluate_module

    crops = tmp_path / "crops" / "with_mask"
    crops.mkdir(parents=True)
    for p in sorted((CROPS / "without_mask").iterdir())[:3]:  # bare faces filed as masked
        shutil.copy(p, crops / p.name)
    monkeypatch.setattr(evaluate_module.cv2, "imwrite", lambda *_args: False)
    with pytest.raises(GateError, match=r"cannot write .*disk full") as caught:
        evaluate(tmp_path / "crops", data_dir, misses=tmp_path / "misses")
    assert "\n" not in str(caught.value)


def misclassified(report: dict) -> int:
    """Matched faces off the confusion matrix's diagonal."""
    return sum(n for t, row in report["confusion"].items() for c, n in row.items() if c != t)
