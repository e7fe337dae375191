"""The camera pipeline end to end with the real BlazeFace model and the committed ONNX classifier.

The detector model is obtained through `gate models fetch` code and cached in
<repo>/var/models, so it is fetched once per machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gate.camera.classifier import FACEMESH, Framing, MaskClassifier, face_crop
from gate.camera.models import facemesh_path, fetch_models
from gate.camera.pipeline import Vision
from gate.camera.simulated import SimulatedCamera, SimVisitor, demo_visitors
from gate.camera.verdict import MaskLabel
from gate.config import CameraSettings

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "var"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    fetch_models(DATA_DIR, progress=False, log=lambda _line: None)
    return DATA_DIR


@pytest.fixture
def vision(data_dir: Path):
    v = Vision(CameraSettings(), data_dir)
    yield v
    v.close()


def _visit(vision: Vision, label: MaskLabel, seed: int, seconds: float = 2.0):
    camera = SimulatedCamera(
        [SimVisitor(f"v{seed}", ((seconds, label),))], clock=lambda: 0.0, start_at=0.0, seed=seed
    )
    return [vision.analyze(camera.render(t), t) for t in np.arange(0, seconds, 1 / 15)]


@pytest.mark.parametrize("label", list(MaskLabel))
def test_simulated_visitor_settles_on_the_drawn_mask(vision: Vision, label: MaskLabel) -> None:
    for seed in (1, 2):
        frames = _visit(vision, label, seed)
        seen = [a.faces[0] for a in frames if a.faces]
        assert len(seen) >= 0.9 * len(frames), "BlazeFace should find the simulated face"
        assert len({f.track_key for f in seen}) == 1, "one visitor, one track"
        settled = [f for f in seen if f.settled]
        assert settled, "the label should settle within a visit"
        assert Counter(f.label for f in settled).most_common(1)[0][0] == label
        first = next(i for i, f in enumerate(seen) if f.settled)
        assert first <= 6, f"decision took {first + 1} frames"


def test_each_demo_visitor_gets_its_own_key(vision: Vision) -> None:
    camera = SimulatedCamera(demo_visitors()[:3], clock=lambda: 0.0, start_at=0.0)
    keys: dict[str, set[str]] = {}
    for t in np.arange(0, 12, 1 / 15):
        analysis = vision.analyze(camera.render(t), t)
        who = camera.visitor_at(t)
        for face in analysis.faces:
            keys.setdefault(who or "nobody", set()).add(face.track_key)
    assert "nobody" not in keys
    assert all(len(k) == 1 for k in keys.values()), keys
    assert len(set().union(*keys.values())) == 3


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((480, 0, 3), np.uint8),
        np.zeros((480, 640, 3), np.float32),
        np.zeros((480, 640, 3), np.uint16),
        np.zeros((480, 640, 2), np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((4400, 7700, 3), np.uint8),  # beyond 8K UHD
        "not a frame",
        None,
    ],
    ids=[
        "empty",
        "zero-width",
        "float",
        "uint16",
        "two-channel",
        "tiny",
        "beyond-8k",
        "str",
        "none",
    ],
)
def test_bad_frames_are_skipped_and_counted(vision: Vision, frame) -> None:
    analysis = vision.analyze(frame, at=1.0)
    assert analysis.faces == []
    assert vision.metrics.skipped == 1
    assert vision.annotate(frame, analysis) is not None


def test_grey_and_8k_frames_are_analysed(vision: Vision) -> None:
    camera = SimulatedCamera([SimVisitor("g", ((1.0, MaskLabel.NO_MASK),))], clock=lambda: 0.0)
    bgr = camera.render(0.5)
    grey = bgr.mean(axis=2).astype(np.uint8)
    assert vision.analyze(grey, 0.0).faces, "a grey (IR) camera frame still shows a face"
    huge = np.repeat(np.repeat(bgr, 9, axis=0), 12, axis=1)[:4320, :7680]
    analysis = vision.analyze(huge, 0.1)
    assert analysis.faces and analysis.faces[0].box[2] > 500, "boxes come back in 8K pixels"
    assert vision.metrics.skipped == 0 and vision.metrics.converted == 1
    assert vision.annotate(huge, analysis).shape == huge.shape


def test_min_face_and_roi_filter_faces(data_dir: Path) -> None:
    camera = SimulatedCamera([SimVisitor("f", ((1.0, MaskLabel.MASK),))], clock=lambda: 0.0)
    frame = camera.render(0.5)
    big = Vision(CameraSettings(min_face_px=400), data_dir)
    corner = Vision(CameraSettings(roi=(0.0, 0.0, 0.2, 0.2)), data_dir)
    try:
        assert big.analyze(frame, 0.0).faces == []
        assert corner.analyze(frame, 0.0).faces == []
    finally:
        big.close()
        corner.close()


def test_committed_model_views_and_crop_shapes(data_dir: Path) -> None:
    """Two pixel views and one FaceMesh view, each cut as its metadata says."""
    image = np.random.default_rng(5).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    box = (100, 100, 80, 80)
    assert face_crop(image, box).shape == (64, 64, 3)
    clf = MaskClassifier(facemesh_model=facemesh_path(data_dir))
    assert clf.views == [
        Framing(64, 1.25, 0.0),
        Framing(64, 1.75, 0.2),
        Framing(192, 1.5, 0.0, FACEMESH),
    ]
    views = [v.crop(image, box)[None] for v in clf.views]
    assert [v.shape[1] for v in views] == [64, 64, 192]
    p = clf.probabilities(*views)
    assert p.shape == (1, 3) and abs(float(p.sum()) - 1) < 1e-4
    mirrored = [v[:, :, ::-1] for v in views]  # a face and its mirror image are not the same
    assert not np.allclose(p, clf.probabilities(*mirrored), atol=1e-3)


def tiny_classifier(
    path: Path, weights: np.ndarray, size: int = 64, framing: dict[str, str] | None = None
) -> Path:
    """The smallest honest classifier: average colour per channel times `weights` -> 3 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        ],
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(weights.astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(3, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (framing or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def test_classifier_takes_its_crop_size_from_the_model(tmp_path: Path) -> None:
    """A 96 px network needs 96 px crops: the size is read from the ONNX input, not assumed."""
    path = tiny_classifier(tmp_path / "wide96.onnx", np.eye(3), size=96)
    clf = MaskClassifier(path)
    assert clf.views[0].size == 96
    p = clf.classify(np.full((200, 200, 3), 128, np.uint8), [(50, 50, 80, 80)])
    assert p.shape == (1, 3) and abs(float(p.sum()) - 1) < 1e-4


def test_classifier_frames_faces_as_its_model_records(tmp_path: Path) -> None:
    """A model trained on wider, lower crops gets them: scale and shift come from its metadata."""
    image = np.zeros((400, 400, 3), np.uint8)
    image[225:] = 255  # white from a little below the face box down
    box = (150, 100, 100, 100)
    lower = tiny_classifier(
        tmp_path / "lower.onnx", np.eye(3) * 8, framing={"crop_scale": "1.6", "crop_shift": "0.2"}
    )
    default = tiny_classifier(tmp_path / "default.onnx", np.eye(3) * 8)
    wide, plain = MaskClassifier(lower), MaskClassifier(default)
    assert wide.views == [Framing(64, 1.6, 0.2)] and plain.views == [Framing(64, 1.25, 0.0)]
    expected = wide.probabilities(face_crop(image, box, 64, 1.6, 0.2)[None])
    assert np.allclose(wide.classify(image, [box]), expected)
    # The lower crop (y 90-250) reaches the white part; the default one (y 87-213) does not.
    assert wide.views[0].crop(image, box).mean() > 20
    assert plain.views[0].crop(image, box).mean() == 0


def test_merged_members_average_their_log_probabilities(tmp_path: Path) -> None:
    """`gate models merge` builds one graph whose output is the members' mean log-softmax."""
    import onnx

    from gate.camera.classifier import log_softmax
    from gate.camera.train import _averaged

    weights = [np.eye(3) * 4, np.array([[0, 2, -1], [1, 0, 3], [-2, 1, 0]]), -np.eye(3)]
    paths = [tiny_classifier(tmp_path / f"m{i}.onnx", w) for i, w in enumerate(weights)]
    merged = tmp_path / "merged.onnx"
    onnx.save(_averaged([onnx.load(p) for p in paths], [[0]] * 3, [1] * 3), merged)
    crops = np.stack([np.full((64, 64, 3), v, np.uint8) for v in ((20, 90, 200), (250, 5, 60))])
    members = [MaskClassifier(p, bias=(0, 0, 0)).probabilities(crops) for p in paths]
    expected = np.exp(log_softmax(np.mean([np.log(p) for p in members], axis=0)))
    got = MaskClassifier(merged, bias=(0, 0, 0)).probabilities(crops)
    assert np.allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, members[0], atol=1e-2)  # really a mix, not the first member


def test_members_with_different_framings_become_views_of_one_model(tmp_path: Path) -> None:
    """Members trained on different framings each get their own input, cropped their way."""
    import onnx

    from gate.camera.classifier import framing_metadata, log_softmax
    from gate.camera.train import _averaged, _framings

    low = {"crop_scale": "1.75", "crop_shift": "0.2"}
    plain = tiny_classifier(tmp_path / "plain.onnx", np.eye(3) * 6)
    lower = tiny_classifier(
        tmp_path / "lower.onnx", np.array([[0, 3, 0], [2, 0, 1], [0, 0, 4]]), framing=low
    )
    views = [Framing(64, 1.25, 0.0), Framing(64, 1.75, 0.2)]
    model = _averaged([onnx.load(plain), onnx.load(lower)], [[0], [1]], [1, 1])
    for key, value in framing_metadata(views).items():
        model.metadata_props.add(key=key, value=value)
    merged = tmp_path / "merged.onnx"
    onnx.save(model, merged)
    assert _framings(model) == views

    image = np.random.default_rng(3).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    image[200:] = (0, 40, 250)  # a coloured band only the lower view reaches
    box = (100, 80, 90, 90)
    both = MaskClassifier(merged, bias=(0, 0, 0))
    assert both.views == views
    members = [MaskClassifier(p, bias=(0, 0, 0)).classify(image, [box]) for p in (plain, lower)]
    expected = np.exp(log_softmax(np.mean([np.log(p) for p in members], axis=0)))
    assert np.allclose(both.classify(image, [box]), expected, atol=1e-4)
    with pytest.raises(ValueError, match="2 views"):
        both.probabilities(views[0].crop(image, box)[None])


def test_a_merged_member_counts_as_the_members_it_holds(tmp_path: Path) -> None:
    """Merging a pair with a third network weighs all three alike, and keeps the pair's views."""
    import onnx

    from gate.camera.classifier import framing_metadata, log_softmax
    from gate.camera.train import _averaged, _framings, _member_count

    low = {"crop_scale": "1.75", "crop_shift": "0.2"}
    paths = [
        tiny_classifier(tmp_path / "a.onnx", np.eye(3) * 5),
        tiny_classifier(
            tmp_path / "b.onnx", np.array([[0, 3, 0], [2, 0, 1], [0, 0, 4]]), framing=low
        ),
        tiny_classifier(tmp_path / "c.onnx", np.array([[1, 0, 2], [0, 0, -3], [4, 1, 0]])),
    ]
    views = [Framing(64, 1.25, 0.0), Framing(64, 1.75, 0.2)]
    pair = _averaged([onnx.load(p) for p in paths[:2]], [[0], [1]], [1, 1])
    for key, value in framing_metadata(views).items():
        pair.metadata_props.add(key=key, value=value)
    pair.metadata_props.add(key="members", value="2")
    assert _member_count(pair) == 2 and _framings(pair) == views
    trio = tmp_path / "trio.onnx"
    model = _averaged([pair, onnx.load(paths[2])], [[0, 1], [0]], [2, 1])
    for key, value in framing_metadata(views).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, trio)

    image = np.random.default_rng(4).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    image[200:] = (30, 200, 90)
    box = (100, 80, 90, 90)
    members = [MaskClassifier(p, bias=(0, 0, 0)).classify(image, [box]) for p in paths]
    expected = np.exp(log_softmax(np.mean([np.log(p) for p in members], axis=0)))
    assert np.allclose(
        MaskClassifier(trio, bias=(0, 0, 0)).classify(image, [box]), expected, atol=1e-4
    )


def test_merge_refuses_a_single_or_unreadable_member(tmp_path: Path) -> None:
    from gate.camera.train import merge
    from gate.errors import GateError

    one = tiny_classifier(tmp_path / "one.onnx", np.eye(3))
    with pytest.raises(GateError, match="at least two"):
        merge(tmp_path, tmp_path / "det.tflite", [one], tmp_path / "out.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(GateError, match=r"junk\.onnx"):
        merge(tmp_path, tmp_path / "det.tflite", [one, tmp_path / "junk.onnx"], tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_the_gate_keeps_no_onnxruntime_device_id_and_sends_no_telemetry(
    tmp_path: Path, models_dir: Path
) -> None:
    """onnxruntime's wheels keep a device ID and queue usage events under
    ~/.cache/Microsoft/DeveloperTools/.onnxruntime unless told not to before they load:
    `gate bench vision`, run with an empty home, leaves nothing of onnxruntime's there."""
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    home.mkdir()
    (data / "models").symlink_to(models_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATE_", "ORT_"))}
    command = ["bench", "vision", "--frames", "10", "--json", "--data-dir", str(data)]
    result = subprocess.run(
        [sys.executable, "-m", "gate", *command],
        capture_output=True,
        text=True,
        env=env | {"HOME": str(home)},
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["p50_ms"] > 0
    assert (home / ".cache").is_dir()  # the command did run with this home (matplotlib's cache)
    assert [p for p in home.rglob("*") if "onnxruntime" in str(p).lower()] == []


def test_a_frame_memory_litert_dislikes_prints_nothing_on_stderr(models_dir: Path) -> None:
    """LiteRT's once-only native notices for its first run and for an input frame not
    aligned as it likes (which it copies) come out during the silenced warm-up, not at
    the first visitor. A fresh process, since the notices come once per process."""
    script = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from gate.camera.detector import FaceDetector\n"
        "from gate.camera.models import detector_path\n"
        f"detector = FaceDetector(detector_path(Path({str(models_dir.parent)!r})))\n"
        "frame = np.zeros(480 * 640 * 3 + 1, np.uint8)[1:].reshape(480, 640, 3)\n"
        "assert detector.detect(frame) == []\n"
        "detector.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
