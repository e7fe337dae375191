"""Train the mask classifier's members and merge them into one ONNX model.

The members are small CNNs trained from scratch on CPU in minutes, with heavy
augmentation to make up for the data size, and one head trained on the frozen
FaceMesh network's features (`gate.camera.facemesh`), the only pretrained
network this machine can reach. Faces are cropped exactly as in inference
(`face_crop` around a detector-like box), with the box jitter a real detector
shows.

Needs the optional `[train]` extra (torch).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from gate.camera import facemesh
from gate.camera.classifier import (
    FACEMESH,
    INPUT_SIZE,
    LABELS,
    Framing,
    bias_metadata,
    face_crop,
    framing_metadata,
    model_inputs,
    plain_logp,
    read_framings,
    trunk_for,
)
from gate.camera.data import (
    SPLIT_SEED,
    in_test_split,
    read_class_folders,
    read_voc,
    split_position,
)
from gate.camera.detector import FaceDetector, box_in_face_image, greedy_match, iou
from gate.camera.evaluate import MATCH_IOU, scene_detections
from gate.camera.evaluate import MIN_FACE as MIN_FACE_SCORED
from gate.camera.quantize import is_quantized
from gate.camera.verdict import Box
from gate.errors import GateError

# Training patches span this many box sides around the box centre, at twice the input
# size, so the random zoom and shift (and a wider or lower framing) stay inside them.
PATCH_SPAN = 2.5
# Measured on training images: BlazeFace's square box against the VOC box
# (centre unchanged, side ≈ 1.07 × width ≈ 0.88 × height, spread ≈ 0.1 / 0.2).
DET_FROM_GT_W, DET_FROM_GT_H = 1.07, 0.88
MIN_TRAIN_FACE = 20
VAL_SEED = SPLIT_SEED + 1  # a validation part of the training images, for model selection
VAL_SHARE = 0.12
ALWAYS_TRAIN = -1.0  # the split position of face-mask crops, which never validate


def detector_like_box(box: Box) -> Box:
    """Where BlazeFace would put its box for a VOC ground-truth face box."""
    x, y, w, h = box
    side = (DET_FROM_GT_W * w + DET_FROM_GT_H * h) / 2
    cx, cy = x + w / 2, y + h / 2
    return round(cx - side / 2), round(cy - side / 2), round(side), round(side)


@dataclass
class Samples:
    patches: np.ndarray  # (N, P, P, 3) uint8 BGR windows of PATCH_SPAN box sides (P: patch_side)
    labels: np.ndarray  # (N,) index into LABELS
    widths: np.ndarray  # (N,) face width in source pixels
    position: np.ndarray  # (N,) the image's split position with VAL_SEED, or ALWAYS_TRAIN
    found: np.ndarray  # (N,) whether the detector found the face (else a detector-like box)

    def parts(self, fold: int | None = None, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation masks. The validation images are the default part
        (position below VAL_SHARE) or fold `fold` of `folds` equal slices of positions;
        only found faces at least 40 px wide are scored, as `gate eval` scores them."""
        low, high = (0.0, VAL_SHARE) if fold is None else (fold / folds, (fold + 1) / folds)
        in_val = (self.position >= low) & (self.position < high)
        return ~in_val, in_val & self.found & (self.widths >= MIN_FACE_SCORED)


def context_patch(image: np.ndarray, box: Box, side: int = 2 * INPUT_SIZE) -> np.ndarray:
    return face_crop(image, box, size=side, scale=PATCH_SPAN, shift=0.0)


def scene_boxes(detector: FaceDetector, image: np.ndarray, faces: tuple) -> list[Box | None]:
    """For each labelled face, the box the gate's own detector draws for it (tiled pass, as
    `gate eval` runs it), or None when the detector misses it."""
    boxes = scene_detections(detector, image, MIN_FACE_SCORED)
    match = greedy_match([f.box for f in faces], boxes, iou, MATCH_IOU)
    return [boxes[match[i]] if i in match else None for i in range(len(faces))]


def collect(
    datasets: Path,
    detector: FaceDetector,
    log: Callable[[str], None],
    patch_side: int = 2 * INPUT_SIZE,
) -> Samples:
    """Training and validation faces; the held-out test images are never opened.

    Scene faces are cropped around the detector's own box where it finds them, so
    training sees the framing inference sees; faces it misses fall back to the box
    it would likely draw.
    """
    patches, labels, widths, positions, found_flags = [], [], [], [], []
    label_index = {lab: i for i, lab in enumerate(LABELS)}
    scenes = datasets / "face-mask-scenes"
    if not scenes.is_dir():
        raise GateError(f"training data not found: {scenes}")
    for item in read_voc(scenes):
        if in_test_split(item.image):
            continue
        image = cv2.imread(str(item.image))
        if image is None:
            log(f"skipping unreadable {item.image}")
            continue
        position = split_position(item.image, VAL_SEED)
        for face, found in zip(item.faces, scene_boxes(detector, image, item.faces), strict=True):
            if face.box[2] < MIN_TRAIN_FACE:
                continue
            box = found if found is not None else detector_like_box(face.box)
            patches.append(context_patch(image, box, patch_side))
            labels.append(label_index[face.label])
            widths.append(face.box[2])
            positions.append(position)
            found_flags.append(found is not None)
    crops = datasets / "face-mask"
    if crops.is_dir():
        for path, label in read_class_folders(crops):
            if in_test_split(path):
                continue
            image = cv2.imread(str(path))
            if image is None:
                log(f"skipping unreadable {path}")
                continue
            box, was_detected = box_in_face_image(detector, image)
            patches.append(context_patch(image, box, patch_side))
            labels.append(label_index[label])
            widths.append(box[2])
            positions.append(ALWAYS_TRAIN)
            found_flags.append(was_detected)
    return Samples(
        np.stack(patches),
        np.array(labels),
        np.array(widths),
        np.array(positions),
        np.array(found_flags),
    )


FACEMESH_HEAD = "facemesh-head"
ARCHITECTURES = ("vgg", "vgg-wide", FACEMESH_HEAD)


def build_net(arch: str = "vgg"):  # -> torch.nn.Module
    """A plain VGG-style CNN. "vgg": 0.6 M parameters (45 M multiply-adds at 64 px);
    "vgg-wide": one more conv stage and wider layers, about 1.2 M parameters;
    "facemesh-head": three conv layers on FaceMesh features, 0.15 M parameters (5 M
    multiply-adds)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

    if arch == "vgg":
        layers = [
            *block(3, 32, 2),  # 1/2
            *block(32, 32),
            nn.MaxPool2d(2),  # 1/4
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),  # 1/8
            *block(64, 128),
            *block(128, 128),
            nn.MaxPool2d(2),  # 1/16
            *block(128, 256),
        ]
        width = 256
    elif arch == "vgg-wide":
        layers = [
            *block(3, 32, 2),  # 1/2
            *block(32, 32),
            nn.MaxPool2d(2),  # 1/4
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),  # 1/8
            *block(64, 128),
            *block(128, 128),
            nn.MaxPool2d(2),  # 1/16
            *block(128, 192),
            *block(192, 192),
            nn.MaxPool2d(2),  # 1/32
            *block(192, 320),
        ]
        width = 320
    elif arch == FACEMESH_HEAD:  # on FaceMesh's 12 × 12 × 128 features, not on pixels
        layers = [*block(128, 64, 2), *block(64, 64), *block(64, 64)]
        width = 64
    else:
        raise GateError(f"unknown architecture {arch!r}")
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(width, len(LABELS)),
    )


def augment(
    batch, rng: np.random.Generator, frame: Framing
):  # uint8 NHWC BGR patches → NCHW RGB in [-1, 1]
    """Detector-box jitter, flips, rotation, colour, low resolution and noise, on a whole batch."""
    import torch
    import torch.nn.functional as F

    n, size = batch.shape[0], frame.size
    x = batch.flip(-1).permute(0, 3, 1, 2).float() / 255.0  # BGR → RGB, NCHW
    scale = np.clip(np.exp(rng.normal(0, 0.15, n)), 0.75, 1.4) * frame.scale / PATCH_SPAN
    angle = np.radians(rng.uniform(-12, 12, n))
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    # Box-centre jitter in box sides, as BlazeFace's boxes wander.
    shift = np.clip(rng.normal(0, 0.055, (n, 2)), -0.14, 0.14) * 2 / PATCH_SPAN
    shift[:, 1] += frame.shift * 2 / PATCH_SPAN
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = scale * np.cos(angle) * flip
    theta[:, 0, 1] = -scale * np.sin(angle)
    theta[:, 1, 0] = scale * np.sin(angle) * flip
    theta[:, 1, 1] = scale * np.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Small and blurry faces: down-sample part of the batch and blow it back up.
    low = torch.from_numpy(rng.random(n) < 0.4)
    if low.any():
        side = int(rng.integers(14, 48))
        small = F.interpolate(x[low], size=(side, side), mode="area")
        x[low] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    gray = x.mean(1, keepdim=True)
    sat = torch.from_numpy(rng.uniform(0.5, 1.5, (n, 1, 1, 1)).astype(np.float32))
    sat[torch.from_numpy(rng.random(n) < 0.1)] = 0.0  # some cameras are grey
    x = gray + (x - gray) * sat
    contrast = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32))
    bright = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32))
    tint = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 3, 1, 1)).astype(np.float32))
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * bright * tint
    x = x + torch.randn_like(x) * torch.from_numpy(
        rng.uniform(0, 0.03, (n, 1, 1, 1)).astype(np.float32)
    )
    return x.clamp(0, 1) * 2 - 1


def nominal(batch, frame: Framing):  # the inference framing, without augmentation
    import torch
    import torch.nn.functional as F

    x = batch.flip(-1).permute(0, 3, 1, 2).float() / 255.0
    k = frame.scale / PATCH_SPAN
    theta = torch.tensor([[k, 0, 0], [0, k, frame.shift * 2 / PATCH_SPAN]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, [len(x), 3, frame.size, frame.size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x * 2 - 1


def val_scores(logp: np.ndarray, labels: np.ndarray, bias: np.ndarray) -> dict[str, float]:
    pred = (logp + bias).argmax(1)
    out = {"accuracy": float((pred == labels).mean())}
    for i, lab in enumerate(LABELS):
        sel = labels == i
        out[f"recall_{lab}"] = float((pred[sel] == i).mean()) if sel.any() else 0.0
    return out


def target_score(s: dict[str, float]) -> float:
    """How close to the issue's goals (accuracy .95, no_mask .97, incorrect .85): the worst ratio."""
    return min(s["accuracy"] / 0.95, s["recall_no_mask"] / 0.97, s["recall_incorrect_mask"] / 0.85)


def calibrate_bias(logp: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Log-prior offsets for the two denial classes that best meet the goals on validation data."""
    best, best_key = np.zeros(3, np.float32), (-1.0, -1.0)
    for b_inc in np.arange(-1.0, 3.01, 0.25):
        for b_no in np.arange(-1.0, 3.01, 0.25):
            bias = np.array([0.0, b_inc, b_no], np.float32)
            s = val_scores(logp, labels, bias)
            key = (round(target_score(s), 3), s["accuracy"])
            if key > best_key:
                best, best_key = bias, key
    return best


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise GateError(
            "training needs the [train] extra: pip install 'entry-gate[train]'"
        ) from None


def load_samples(
    datasets: Path,
    detector_model: Path,
    log: Callable[[str], None],
    patch_side: int = 2 * INPUT_SIZE,
    cache: Path | None = None,
) -> Samples:
    """The collected faces, from `cache` when it holds them (else collected and saved there)."""
    if cache is not None and cache.is_file():
        fields = ("patches", "labels", "widths", "position", "found")
        try:
            with np.load(cache) as z:
                if not set(fields) <= set(z.files):
                    raise GateError(f"{cache} was written by an older gate train; delete it")
                samples = Samples(*(z[k] for k in fields))
        except (OSError, ValueError):  # not an .npz at all, or a damaged one
            raise GateError(
                f"{cache} is not a faces cache written by gate train; delete it"
            ) from None
        if samples.patches.shape[1] != patch_side:
            raise GateError(
                f"{cache} holds {samples.patches.shape[1]} px patches, not {patch_side} px"
            )
        log(f"loaded {len(samples.labels)} collected faces from {cache}")
        return samples
    with FaceDetector(detector_model, min_confidence=0.5) as detector:
        samples = collect(datasets, detector, log, patch_side)
    if cache is not None:
        np.savez(cache, **samples.__dict__)
    return samples


def train(
    datasets: Path,
    detector_model: Path,
    out: Path,
    epochs: int = 40,
    batch_size: int = 128,
    seed: int = 7,
    threads: int = 2,
    max_minutes: float = 25.0,
    log: Callable[[str], None] = print,
    frame: Framing | None = None,
    arch: str = "vgg",
    ema: float = 0.0,
    lr: float = 3e-3,
    cache: Path | None = None,
    fold: int | None = None,
    folds: int = 5,
    mixup: float = 0.0,
    facemesh_model: Path | None = None,
) -> dict:
    """Train, pick the best epoch on validation, calibrate the bias, export ONNX. Returns a report.

    A FaceMesh head (`frame.net` FACEMESH) trains on the frozen network's features of
    each augmented batch, so it sees the same augmentation as the CNNs.

    With `fold`, that slice of the training images validates instead of the default
    part, and the report keeps the last epoch's validation log-probabilities:
    they were not used to pick anything, so runs over all folds add up to an
    out-of-fold score for the recipe (`benchmarks/cv_score.py`).
    """
    _require_torch()
    import torch
    import torch.nn.functional as F

    frame = frame or Framing()
    if (arch == FACEMESH_HEAD) != (frame.net == FACEMESH):
        raise GateError(f"{arch} does not read {frame.net or 'pixels'}")
    trunk = trunk_for([frame], facemesh_model, threads)
    inputs_of = partial(model_inputs, [frame], trunk=trunk)  # crop tensors → network input
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    samples = load_samples(datasets, detector_model, log, frame.patch_side, cache)
    is_train, is_val = samples.parts(fold, folds)
    log(
        f"{is_train.sum()} training faces, {is_val.sum()} validation faces >= 40 px, "
        f"per class {np.bincount(samples.labels[is_train], minlength=3).tolist()} "
        f"({time.monotonic() - started:.0f} s to collect)"
    )
    x_train = torch.from_numpy(samples.patches[is_train])
    y_train = torch.from_numpy(samples.labels[is_train]).long()
    val_inputs = inputs_of([nominal(torch.from_numpy(samples.patches[is_val]), frame).numpy()])[0]
    y_val = samples.labels[is_val]
    counts = np.bincount(samples.labels[is_train], minlength=3).astype(np.float64)
    weights = torch.tensor((counts.sum() / counts) ** 0.5, dtype=torch.float32)
    weights = weights / weights.mean()

    net = build_net(arch)
    # An exponential moving average of the weights (and BN statistics) evens out the
    # epoch-to-epoch swings of a small network on a small validation part.
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema), use_buffers=True
        )
        if ema > 0
        else None
    )
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_of = partial(F.cross_entropy, weight=weights, label_smoothing=0.05)
    best: dict = {"score": -1.0}
    history = []
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(x_train)))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x, y = augment(x_train[idx], rng, frame), y_train[idx]
            if trunk is not None:
                x = torch.from_numpy(inputs_of([x.numpy()])[0])
            if mixup > 0:  # blend pairs of faces and their labels alike
                share, partner = (
                    float(rng.beta(mixup, mixup)),
                    torch.from_numpy(rng.permutation(len(idx))),
                )
                logits = net(share * x + (1 - share) * x[partner])
                loss = share * loss_of(logits, y) + (1 - share) * loss_of(logits, y[partner])
            else:
                loss = loss_of(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(net)
            total += loss.item() * len(idx)
        kept = net if averaged is None else averaged.module
        logp = _val_logp(kept, val_inputs)
        s = val_scores(logp, y_val, np.zeros(3, np.float32))
        s["score"] = target_score(s)
        elapsed = (time.monotonic() - started) / 60
        history.append({"epoch": epoch + 1, "loss": total / len(x_train), **s, "minutes": elapsed})
        log(
            f"epoch {epoch + 1}/{epochs} loss {total / len(x_train):.3f} val acc {s['accuracy']:.3f} "
            f"no_mask {s['recall_no_mask']:.3f} incorrect {s['recall_incorrect_mask']:.3f} "
            f"({elapsed:.1f} min)"
        )
        # The one-cycle schedule ends low, so later epochs win ties.
        if s["score"] + 0.5 * s["accuracy"] >= best["score"]:
            best = {"score": s["score"] + 0.5 * s["accuracy"], "epoch": epoch + 1}
            best_state = {k: v.clone() for k, v in kept.state_dict().items()}
        if elapsed > max_minutes:
            log(f"stopping after {elapsed:.1f} min (limit {max_minutes})")
            break
    last_logp = logp
    net.load_state_dict(best_state)
    logp = _val_logp(net, val_inputs)
    bias = calibrate_bias(logp, y_val)
    report = {
        "best_epoch": best["epoch"],
        "bias": bias.tolist(),
        "val_before_bias": val_scores(logp, y_val, np.zeros(3, np.float32)),
        "val_after_bias": val_scores(logp, y_val, bias),
        "input_size": frame.size,
        "crop_scale": frame.scale,
        "crop_shift": frame.shift,
        "arch": arch,
        "ema": ema,
        "mixup": mixup,
        "validation": "default part" if fold is None else f"fold {fold} of {folds}",
        "n_train": int(is_train.sum()),
        "n_val": int(is_val.sum()),
        "train_per_class": counts.astype(int).tolist(),
        "minutes": (time.monotonic() - started) / 60,
        "history": history,
    }
    if fold is not None:
        report["val_labels"] = y_val.tolist()
        report["val_logp_last_epoch"] = np.round(last_logp, 4).tolist()
    export_onnx(net, out, bias, frame)
    out.with_suffix(".train.json").write_text(json.dumps(report, indent=1))
    log(f"wrote {out} (best epoch {best['epoch']}, bias {bias.tolist()})")
    return report


def _val_logp(net, val_inputs: np.ndarray) -> np.ndarray:
    """Validation log-probabilities, as `gate eval` computes them."""
    import torch

    net.eval()
    with torch.no_grad():
        return plain_logp(lambda xs: net(torch.from_numpy(xs[0])).numpy(), [val_inputs])


def export_onnx(net, out: Path, bias: np.ndarray, frame: Framing) -> None:
    """Write the network as ONNX (logits out) with its labels, framing and calibrated bias
    as metadata."""
    import onnx
    import torch

    net.eval()
    shape = facemesh.FEATURE_SHAPE if frame.net == FACEMESH else (3, frame.size, frame.size)
    dummy = torch.zeros(1, *shape)
    torch.onnx.export(
        net, (dummy,), str(out), input_names=["crops"], output_names=["logits"],
        dynamic_axes={"crops": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    model = onnx.load(str(out))
    _save_with_metadata(model, out, bias, [frame])


def _save_with_metadata(
    model, out: Path, bias: np.ndarray, views: list[Framing], **extra: str
) -> None:  # model: onnx.ModelProto
    """Write a model with what the classifier reads back: labels, bias and each view's framing."""
    import onnx

    meta = {"labels": ",".join(LABELS), "bias": bias_metadata(bias)}
    for key, value in (meta | extra | framing_metadata(views)).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))


def merge(
    datasets: Path,
    detector_model: Path,
    members: list[Path],
    out: Path,
    log: Callable[[str], None] = print,
    cache: Path | None = None,
    facemesh_model: Path | None = None,
) -> dict:
    """Average trained members into one ONNX model and calibrate its bias on validation.

    Runs of different seeds, or trained on different framings of the face, get
    different faces wrong; averaging their log-probabilities cancels part of that.
    Members that frame faces alike share one input; each other framing becomes an
    input (a view) of its own. A member may itself be a merged model: it counts
    as the members it holds, so merging a pair with a third network weighs all
    three alike. Weights are stored as float16 to keep the file small;
    onnxruntime folds them back to float32 when it loads the model.
    """
    import onnx

    if len(members) < 2:
        raise GateError("merging needs at least two member models")
    models = []
    for path in members:
        try:
            models.append(onnx.load(str(path)))
        except Exception as exc:  # onnx raises protobuf, OS and its own errors
            raise GateError(f"cannot read member model {path}: {exc}") from None
        if is_quantized(models[-1]):
            raise GateError(f"{path} is quantized; merge the float models, then quantize")
    member_views = [_framings(m) for m in models]
    views = list(dict.fromkeys(v for mv in member_views for v in mv))  # distinct, in order
    counts = [_member_count(m) for m in models]
    model = _averaged(models, [[views.index(v) for v in mv] for mv in member_views], counts)
    _require_torch()
    trunk = trunk_for(views, facemesh_model)
    samples = load_samples(datasets, detector_model, log, max(v.patch_side for v in views), cache)
    _, is_val = samples.parts()
    y_val = samples.labels[is_val]
    logp = _onnx_val_logp(model, cached_inputs(samples, is_val, views, trunk))
    bias = calibrate_bias(logp, y_val)
    _save_with_metadata(model, out, bias, views, members=str(sum(counts)))
    report = {
        "members": [_member_summary(p) for p in members],
        "bias": bias.tolist(),
        "n_val": int(is_val.sum()),
        "val_before_bias": val_scores(logp, y_val, np.zeros(3, np.float32)),
        "val_after_bias": val_scores(logp, y_val, bias),
    }
    out.with_suffix(".train.json").write_text(json.dumps(report, indent=1))
    log(f"wrote {out} ({sum(counts)} members, bias {bias.tolist()})")
    return report


def cached_inputs(
    samples: Samples, chosen: np.ndarray, views: list[Framing], trunk: Callable | None
) -> list[np.ndarray]:
    """Model inputs, one per view, for the chosen cached faces, framed as inference frames
    them (no augmentation); FaceMesh views go through `trunk`."""
    import torch

    patches = torch.from_numpy(samples.patches[chosen])
    return model_inputs(views, [nominal(patches, v).numpy() for v in views], trunk)


def _member_summary(path: Path) -> dict:
    """A member's path and, when its training report lies beside it, what it says about it."""
    summary: dict = {"path": str(path)}
    report = path.with_suffix(".train.json")
    if report.is_file():
        trained = json.loads(report.read_text())
        keep = ("best_epoch", "crop_scale", "crop_shift", "bias", "val_before_bias", "minutes")
        summary |= {k: trained[k] for k in keep if k in trained}
    return summary


def _framings(model) -> list[Framing]:  # onnx.ModelProto -> one Framing per input
    """The framings a model records for its inputs (older models: the defaults)."""
    meta = {p.key: p.value for p in model.metadata_props}
    sizes = [i.type.tensor_type.shape.dim[-1].dim_value for i in model.graph.input]
    return read_framings(sizes, meta)


def _member_count(model) -> int:  # onnx.ModelProto: a merged model records its members
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        return int(meta.get("members", "1"))
    except ValueError:
        raise GateError(f"model metadata holds a bad member count: {meta['members']}") from None


def _averaged(models: list, view_of: list[list[int]], counts: list[int]) -> object:
    """One graph whose `logits` is the mean of its networks' log-softmax.

    Input k of model i reads view `view_of[i][k]`: `crops` when there is one view,
    else `crops_0`, `crops_1`, ... Model i weighs `counts[i]`, the networks it
    holds (list[onnx.ModelProto] -> onnx.ModelProto).
    """
    import onnx
    from onnx import compose, helper, numpy_helper

    n_views = 1 + max(j for views in view_of for j in views)
    names = ["crops"] if n_views == 1 else [f"crops_{j}" for j in range(n_views)]
    types = {
        j: m.graph.input[k].type
        for m, vs in zip(models, view_of, strict=True)
        for k, j in enumerate(vs)
    }
    inputs = [helper.make_value_info(name, types[j]) for j, name in enumerate(names)]
    nodes, initializers, member_outputs = [], [], []
    for i, member in enumerate(models):
        graph = compose.add_prefix(member, f"m{i}_").graph
        renamed = {x.name: names[j] for x, j in zip(graph.input, view_of[i], strict=True)}
        for node in graph.node:
            node.input[:] = [renamed.get(x, x) for x in node.input]
        for init in graph.initializer:  # float16 storage, cast back once at load
            if init.data_type == onnx.TensorProto.FLOAT16:  # a merged member's, already cast
                initializers.append(init)
                continue
            half = numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), f"{init.name}_f16"
            )
            initializers.append(half)
            nodes.append(
                helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT)
            )
        nodes.extend(graph.node)
        # A merged member's mean log-probabilities are renormalised here; that shifts each
        # face's row by a constant, which the classifier's own softmax takes out again.
        weight = numpy_helper.from_array(np.array(counts[i], np.float32), f"m{i}_weight")
        initializers.append(weight)
        nodes += [
            helper.make_node("LogSoftmax", [graph.output[0].name], [f"m{i}_logp"], axis=1),
            helper.make_node("Mul", [f"m{i}_logp", weight.name], [f"m{i}_weighted"]),
        ]
        member_outputs.append(f"m{i}_weighted")
    total = numpy_helper.from_array(np.array(sum(counts), np.float32), "member_count")
    initializers.append(total)
    nodes.append(helper.make_node("Sum", member_outputs, ["logp_sum"]))
    nodes.append(helper.make_node("Div", ["logp_sum", total.name], ["logits"]))
    first = models[0]
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", len(LABELS)])
    graph = helper.make_graph(nodes, "mask_ensemble", inputs, [logits], initializers)
    model = helper.make_model(graph, opset_imports=first.opset_import)
    model.ir_version = first.ir_version
    onnx.checker.check_model(model)
    return model


def _onnx_val_logp(model, inputs: list[np.ndarray]) -> np.ndarray:
    """Validation log-probabilities of an in-memory ONNX model, one input per view, as
    `gate eval` computes them."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return plain_logp(lambda xs: session.run(None, dict(zip(names, xs, strict=True)))[0], inputs)
