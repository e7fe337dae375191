"""`gate eval`: score the detector and classifier on labelled data.

Two layouts: a folder of class sub-folders holding face crops, or a Pascal VOC
set (`images/` + `annotations/`) of whole scenes. Scenes run the whole
pipeline (tiled detection, crop, classify) and match detections to the
labelled faces at IoU >= 0.4; only faces at least `min_face` px wide count.
`evaluate_door` instead re-frames each face of a VOC set as the door camera
sees one visitor and runs the door's own single-pass `Vision` on it.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gate.camera.blazeface import DOOR_THRESHOLD, BlazeFaceOnnx
from gate.camera.classifier import LABELS, MODEL_PATH, MaskClassifier, face_crop
from gate.camera.data import VocFace, VocImage, is_voc, read_class_folders, read_voc, select_split
from gate.camera.detector import TiledSearch, box_in_face_image, greedy_match, iou
from gate.camera.doorframe import (
    FACE_HEIGHT,
    FACE_SHARE,
    FRAME_SIZE,
    DoorWindow,
    boxes_in_frame,
    door_frame,
    frame_box,
)
from gate.camera.models import facemesh_path
from gate.camera.pipeline import Vision
from gate.camera.tracker import Tracker
from gate.camera.verdict import Box, FaceVerdict, MaskLabel
from gate.config import CameraSettings
from gate.errors import GateError

log = logging.getLogger(__name__)

MATCH_IOU = 0.4
MIN_FACE = 40  # px: the floor for scored faces
SIZE_BANDS = ((40, 80), (80, 160), (160, 100_000))


@dataclass
class _Tally:
    """Counts for one group of faces (all, or one size band)."""

    n: int = 0
    found: int = 0
    correct: int = 0
    per_class_n: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    per_class_found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: dict.fromkeys(LABELS, 0) for t in LABELS}
    )

    def add(self, truth: MaskLabel, predicted: MaskLabel | None) -> None:
        self.n += 1
        self.per_class_n[truth] += 1
        if predicted is None:
            return
        self.found += 1
        self.per_class_found[truth] += 1
        self.confusion[truth][predicted] += 1
        self.correct += truth == predicted

    def summary(self) -> dict:
        per_class = {}
        for c in LABELS:
            tp = self.confusion[c][c]
            predicted = sum(self.confusion[t][c] for t in LABELS)
            matched = sum(self.confusion[c].values())
            per_class[c] = {
                "n": self.per_class_n[c],
                "detection_recall": ratio(self.per_class_found[c], self.per_class_n[c]),
                "precision": ratio(tp, predicted),
                "recall": ratio(tp, matched),
            }
        return {
            "n_faces": self.n,
            "detection_recall": ratio(self.found, self.n),
            "accuracy": ratio(self.correct, self.found),
            "end_to_end_accuracy": ratio(self.correct, self.n),
            "per_class": per_class,
            "confusion": self.confusion,
        }


class _Misses:
    """Each misclassified face as a crop under `<truth>-as-<called>/` and a row of
    misses.csv, so a person can look at what the model gets wrong and why. The box
    is the one the face was classified in: the detector's, as the gate would see it."""

    CROP_SIDE = 160
    CROP_SCALE = 1.8  # wider than the model's view: the chin and neck show where a mask hangs

    def __init__(self, folder: Path | None, root: Path) -> None:
        self.folder, self.root, self.rows = folder, root, []
        if folder is None:
            return
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise GateError(f"--misses {folder}: give a new or empty folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GateError(f"cannot create the folder {folder} ({exc.strerror})") from None

    def add(
        self,
        image_path: Path,
        image: np.ndarray,
        box: Box,
        truth: MaskLabel,
        called: MaskLabel,
        probs: np.ndarray,
    ) -> None:
        if self.folder is None or called == truth:
            return
        name = f"{len(self.rows) + 1:04d}_{image_path.stem}.jpg"  # numbered: never two alike
        crop = self.folder / f"{truth}-as-{called}" / name
        try:
            crop.parent.mkdir(exist_ok=True)
            written = cv2.imwrite(str(crop), face_crop(image, box, self.CROP_SIDE, self.CROP_SCALE))
        except (OSError, cv2.error):
            written = False
        if not written:
            raise GateError(f"cannot write {crop}: is the disk full or read-only?")
        where = image_path.relative_to(self.root).as_posix()
        self.rows.append([where, *box, truth, called, *(f"{p:.3f}" for p in probs), crop.name])

    def close(self) -> dict:
        if self.folder is None:
            return {}
        header = ["image", "x", "y", "w", "h", "truth", "called"]
        header += [f"p_{label}" for label in LABELS] + ["crop"]
        table = self.folder / "misses.csv"
        try:
            with table.open("w", newline="") as out:
                csv.writer(out).writerows([header, *self.rows])
        except OSError as exc:
            raise GateError(f"cannot write {table} ({exc.strerror})") from None
        return {"misses": len(self.rows), "misses_folder": str(self.folder)}


def ratio(a: int, b: int) -> float | None:
    """a / b to four places; None when there is nothing to divide by."""
    return round(a / b, 4) if b else None


def evaluate(
    path: Path,
    data_dir: Path,
    *,
    min_face: int = MIN_FACE,
    split: str = "all",
    limit: int | None = None,
    classifier_path: Path = MODEL_PATH,
    min_confidence: float = DOOR_THRESHOLD,
    progress: Callable[[int, int], None] | None = None,
    misses: Path | None = None,
) -> dict:
    """Evaluate on a VOC scene set or a folder of class sub-folders; returns the JSON report.

    With `misses`, each matched face classified wrongly is also written there (`_Misses`).
    """
    if not path.is_dir():
        raise GateError(f"evaluation data not found: {path}")
    classifier = MaskClassifier(classifier_path, threads=1, facemesh_model=facemesh_path(data_dir))
    wrong = _Misses(misses, path)
    with BlazeFaceOnnx(min_confidence=min_confidence) as detector:
        if is_voc(path):
            report = _eval_voc(path, detector, classifier, min_face, split, limit, progress, wrong)
        else:
            report = _eval_crops(path, detector, classifier, split, limit, progress, wrong)
    report.update(split=split, min_face=min_face, model=str(classifier_path), **wrong.close())
    return report


def scene_detections(detector: TiledSearch, image: np.ndarray, min_face: int) -> list[Box]:
    """Face boxes in a BGR scene photo, found the way scored scenes are searched (tiled).

    Detections a little under `min_face` still match labelled faces at `min_face`.
    """
    found = detector.detect_tiled(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), int(min_face * 0.7))
    return [d.box for d in found]


def _thin(items: list, limit: int | None) -> list:
    """An evenly spread subset, so a quick run still sees every kind of image."""
    if limit is None or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _eval_voc(path, detector, classifier, min_face, split, limit, progress, wrong) -> dict:
    items = read_voc(path)
    keep = set(select_split([it.image for it in items], split))
    items = _thin([it for it in items if it.image in keep], limit)
    total, bands = _Tally(), {band: _Tally() for band in SIZE_BANDS}
    unreadable, detections, spurious, ms = [], 0, 0, []
    for i, item in enumerate(items):
        image = cv2.imread(str(item.image))
        if image is None:
            unreadable.append(item.image.name)
            log.warning("unreadable image skipped: %s", item.image)
            continue
        start = time.perf_counter()
        boxes = scene_detections(detector, image, min_face)
        probs = classifier.classify(image, boxes)
        ms.append((time.perf_counter() - start) * 1000)
        match = greedy_match([f.box for f in item.faces], boxes, iou, MATCH_IOU)
        used = set(match.values())
        detections += sum(1 for b in boxes if b[2] >= min_face)
        spurious += sum(1 for bi, b in enumerate(boxes) if b[2] >= min_face and bi not in used)
        for fi, face in enumerate(item.faces):
            if face.box[2] < min_face:
                continue
            bi = match.get(fi)
            predicted = None if bi is None else LABELS[int(np.argmax(probs[bi]))]
            total.add(face.label, predicted)
            if bi is not None:
                wrong.add(item.image, image, boxes[bi], face.label, predicted, probs[bi])
            for band, tally in bands.items():
                if band[0] <= face.box[2] < band[1]:
                    tally.add(face.label, predicted)
        if progress:
            progress(i + 1, len(items))
    report = total.summary()
    report.update(
        kind="voc",
        n_images=len(items) - len(unreadable),
        unreadable=unreadable,
        ms_per_image=round(float(np.mean(ms)), 2) if ms else None,
        false_detections=spurious,
        detections=detections,
        by_size={
            f"{lo}-{hi if hi < 100_000 else ''}px": _brief(t) for (lo, hi), t in bands.items()
        },
    )
    return report


def _eval_crops(path, detector, classifier, split, limit, progress, wrong) -> dict:
    items = read_class_folders(path)
    keep = set(select_split([p for p, _ in items], split))
    items = _thin([(p, lab) for p, lab in items if p in keep], limit)
    total, unreadable, ms = _Tally(), [], []
    detected = 0
    for i, (image_path, label) in enumerate(items):
        image = cv2.imread(str(image_path))
        if image is None:
            unreadable.append(image_path.name)
            log.warning("unreadable image skipped: %s", image_path)
            continue
        start = time.perf_counter()
        box, was_detected = box_in_face_image(detector, image)
        probs = classifier.classify(image, [box])
        ms.append((time.perf_counter() - start) * 1000)
        detected += was_detected
        called = LABELS[int(np.argmax(probs[0]))]
        total.add(label, called)
        wrong.add(image_path, image, box, label, called, probs[0])
        if progress:
            progress(i + 1, len(items))
    report = total.summary()
    # Every crop is classified (undetected ones as a whole); say how often BlazeFace found it.
    report["detection_recall"] = ratio(detected, total.n)
    report.update(
        kind="crops",
        n_images=total.n,
        unreadable=unreadable,
        ms_per_image=round(float(np.mean(ms)), 2) if ms else None,
        two_class_accuracy=_two_class(total),
    )
    return report


def _two_class(t: _Tally) -> float | None:
    """Accuracy when a mask worn wrongly still counts as 'a mask' (the 2-class anchor's question)."""
    wearing = (MaskLabel.MASK, MaskLabel.INCORRECT_MASK)
    right = sum(t.confusion[MaskLabel.MASK][p] for p in wearing)
    right += t.confusion[MaskLabel.NO_MASK][MaskLabel.NO_MASK]
    return ratio(right, t.found)


def _brief(t: _Tally) -> dict:
    s = t.summary()
    return {k: s[k] for k in ("n_faces", "detection_recall", "accuracy", "end_to_end_accuracy")}


# ------------------------------------------------------------------ door framing

DOOR_MIN_FACE = 60  # px in the photo: below this a door frame would be mostly upscaling
MISSED = "missed"  # the confusion's fourth column: the detector did not find the face
IMPROPER = (MaskLabel.NO_MASK, MaskLabel.INCORRECT_MASK)


@dataclass(frozen=True)
class DoorFace:
    """One labelled face to re-frame: its photo, the photo's labelled boxes, which one."""

    item: VocImage
    index: int

    @property
    def face(self) -> VocFace:
        return self.item.faces[self.index]

    @property
    def key(self) -> str:
        """Stable across splits and limits: the image's stem and the face's place in it."""
        return f"{self.item.image.stem}:{self.index}"


def door_faces(path: Path, split: str, min_face: int, limit: int | None) -> list[DoorFace]:
    """Every labelled face at least `min_face` px wide of a VOC set's split, thinned to `limit`."""
    if not path.is_dir():
        raise GateError(f"evaluation data not found: {path}")
    if not is_voc(path):
        raise GateError(f"{path} is not a VOC set (images/ + annotations/): door framing needs one")
    if min_face < 1:
        raise GateError(f"--min-face {min_face} must be at least 1")
    items = read_voc(path)
    keep = set(select_split([it.image for it in items], split))
    faces = [
        DoorFace(it, i)
        for it in items
        if it.image in keep
        for i, f in enumerate(it.faces)
        if f.box[2] >= min_face
    ]
    return _thin(faces, limit)


def size_bands(min_face: int) -> list[tuple[int, int]]:
    """The scene bands, starting at `min_face`."""
    return [(max(lo, min_face), hi) for lo, hi in SIZE_BANDS if hi > min_face]


def band_name(band: tuple[int, int]) -> str:
    lo, hi = band
    return f"{lo}-{hi if hi < 100_000 else ''}px"


@dataclass
class DoorTally:
    """Door-framed faces by true label and what the door made of each: a label, or missed."""

    rows: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: dict.fromkeys([*LABELS, MISSED], 0) for t in LABELS}
    )
    false_detections: int = 0
    frames: int = 0

    def add(self, truth: MaskLabel, called: MaskLabel | None, false_detections: int = 0) -> None:
        self.rows[truth][called or MISSED] += 1
        self.false_detections += false_detections
        self.frames += 1

    def summary(self) -> dict:
        """The door's figures. A missed face is refused (the door stays shut) but not found."""
        masked = self.rows[MaskLabel.MASK]
        n_masked = sum(masked.values())
        found_masked = n_masked - masked[MISSED]
        improper = [self.rows[t] for t in IMPROPER]
        n_improper = sum(sum(r.values()) for r in improper)
        admitted_improper = sum(r[MaskLabel.MASK] for r in improper)
        found_improper = n_improper - sum(r[MISSED] for r in improper)
        refused_found = found_improper - admitted_improper
        prompt_right = sum(self.rows[t][t] for t in IMPROPER)
        return {
            "n_faces": self.frames,
            "n_masked": n_masked,
            "n_improper": n_improper,
            "masked_found": ratio(found_masked, n_masked),
            "found_masked_admitted": ratio(masked[MaskLabel.MASK], found_masked),
            "masked_found_and_admitted": ratio(masked[MaskLabel.MASK], n_masked),
            "improper_refused": ratio(n_improper - admitted_improper, n_improper),
            "improper_admitted": admitted_improper,
            "improper_found": ratio(found_improper, n_improper),
            "prompt_accuracy": ratio(prompt_right, refused_found),
            "false_detections": self.false_detections,
            "false_detections_per_frame": ratio(self.false_detections, self.frames),
        }


def evaluate_door(
    path: Path,
    data_dir: Path,
    *,
    min_face: int = DOOR_MIN_FACE,
    split: str = "all",
    limit: int | None = None,
    classifier_path: Path = MODEL_PATH,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Each labelled face re-framed as the door camera sees one visitor (`doorframe`), then
    one `Vision.analyze` on that frame: the detector and classifier the door runs, one pass.

    Per frame means one frame and no voting: the tracker is replaced by a fresh one before
    every frame, so the label of each face is the classifier's own on that frame. The
    detection matching the re-framed labelled box at IoU >= 0.4 is scored; other labelled
    faces in the frame may be found but are not scored, and a detection matching no
    labelled face in the frame is a false detection.
    """
    faces = door_faces(path, split, min_face, limit)
    total = DoorTally()
    bands = {band: DoorTally() for band in size_bands(min_face)}
    unreadable: set[str] = set()
    ms: list[float] = []
    photo, photo_path = None, None
    vision = Vision(CameraSettings(), data_dir, classifier_path=classifier_path)
    try:
        for i, door in enumerate(faces):
            if door.item.image != photo_path:
                photo_path, photo = door.item.image, cv2.imread(str(door.item.image))
            if photo is None:
                unreadable.add(door.item.image.name)
                continue
            frame, window = door_frame(photo, door.face.box)
            vision.tracker = Tracker()
            analysis = vision.analyze(frame, at=float(i))
            ms.append(analysis.ms)
            called, false = _judge_door_frame(door, window, analysis.faces)
            total.add(door.face.label, called, false)
            for band, tally in bands.items():
                if band[0] <= door.face.box[2] < band[1]:
                    tally.add(door.face.label, called, false)
            if progress:
                progress(i + 1, len(faces))
    finally:
        vision.close()
    report = {"kind": "door", **total.summary()}
    report.update(
        ms_per_frame_p50=percentile(ms, 50),
        ms_per_frame_p99=percentile(ms, 99),
        confusion=total.rows,
        by_size={band_name(band): t.summary() for band, t in bands.items()},
        framing={"frame": list(FRAME_SIZE), "face_share": FACE_SHARE, "face_height": FACE_HEIGHT},
        unreadable=sorted(unreadable),
        split=split,
        min_face=min_face,
        model=str(classifier_path),
    )
    return report


def _judge_door_frame(
    door: DoorFace, window: DoorWindow, found: list[FaceVerdict]
) -> tuple[MaskLabel | None, int]:
    """What the door called the target face (None: not found), and the false detections."""
    shown = boxes_in_frame(window, [f.box for f in door.item.faces])
    labelled = [frame_box(window, door.item.faces[i].box) for i in shown]
    match = greedy_match(labelled, [f.box for f in found], iou, MATCH_IOU)
    target = match.get(shown.index(door.index))
    called = None if target is None else found[target].label
    return called, len(found) - len(match)


def percentile(values: list[float], q: float, places: int = 2) -> float | None:
    return round(float(np.percentile(values, q)), places) if values else None
