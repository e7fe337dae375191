"""`gate train-detector`: fine-tune BlazeFace short range to find masked faces at the door.

Google's BlazeFace was trained on bare faces; a mask hides the nose and mouth
it leans on. This starts from its weights (the file `gate models fetch`
caches), rebuilt layer by layer in torch, and trains on door-framed faces of
the training images: each labelled face re-framed as a camera beside a door
sees it, at a random size, place and light. Google's own network stays as the
teacher: its box for a face it finds is the box the student learns, so the
mask classifier keeps the framing it was trained on, and anchors where it is
sure of a face nobody labelled are not punished. The held-out test images
are never opened.

Needs the optional `[train]` extra (torch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gate.camera.blazeface import ANCHORS, INPUT_SIZE, decode, scores_of
from gate.camera.data import SPLIT_SEED, in_test_split, read_voc, split_position
from gate.camera.train import VAL_SEED, VAL_SHARE, _require_torch, detector_like_box
from gate.camera.verdict import Box
from gate.errors import GateError

POSITIVE_IOU = 0.5  # an anchor whose teacher box overlaps a face this much should fire
NEGATIVE_IOU = 0.3  # below this with every face, it should not
TEACHER_SURE = 0.5  # an unlabelled find this sure is neither punished nor rewarded
NEGATIVES_PER_POSITIVE = 3


def build_net(tflite_path: Path):  # -> torch.nn.Module
    """BlazeFace as a torch module with Google's weights, from the TFLite graph.

    Every operator the short-range graph uses is translated one to one, NHWC → NCHW, and
    TF's SAME padding (more after than before) is written out, so the outputs match
    MediaPipe's own to float precision.
    """
    import tflite
    import torch
    from torch import nn
    from torch.nn import functional as F

    model = tflite.Model.GetRootAsModel(tflite_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    constants: dict[str, np.ndarray] = {}

    def tensor(index: int) -> tuple[str, np.ndarray | None]:
        t = graph.Tensors(index)
        name = t.Name().decode()
        if name in constants:
            return name, constants[name]
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return name, None
        dtype = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32,
                 tflite.TensorType.INT32: np.int32}[t.Type()]  # fmt: skip
        return name, np.frombuffer(data.tobytes(), dtype).reshape(t.ShapeAsNumpy())

    def options(op, kind):
        opts, table = kind(), op.BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        return opts

    steps: list[tuple] = []
    params = nn.ParameterDict()
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [tensor(op.Inputs(j)) for j in range(op.InputsLength())]
        out = graph.Tensors(op.Outputs(0)).Name().decode()
        key = out.replace("/", "_").replace(".", "_")
        if kind == "DEQUANTIZE":
            constants[out] = ins[0][1].astype(np.float32)
        elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = options(op, tflite.Conv2DOptions if kind == "CONV_2D"
                           else tflite.DepthwiseConv2DOptions)  # fmt: skip
            kernel, bias = ins[1][1], ins[2][1]
            if kind == "CONV_2D":
                weight, groups = kernel.transpose(0, 3, 1, 2), 1
            else:
                weight, groups = kernel.transpose(3, 0, 1, 2), kernel.shape[3]
            params[key + "_w"] = nn.Parameter(torch.tensor(np.ascontiguousarray(weight)))
            params[key + "_b"] = nn.Parameter(torch.tensor(bias.copy()))
            same = opts.Padding() == tflite.Padding.SAME
            steps.append(("conv", ins[0][0], out, key, opts.StrideH(), groups, same,
                          opts.FusedActivationFunction()))  # fmt: skip
        elif kind == "MAX_POOL_2D":
            opts = options(op, tflite.Pool2DOptions)
            steps.append(("pool", ins[0][0], out, opts.FilterHeight(), opts.StrideH()))
        elif kind == "PAD":
            pads = ins[1][1].reshape(4, 2)  # NHWC (before, after)
            steps.append(("pad", ins[0][0], out, tuple(int(v) for v in pads[3])))
        elif kind == "RESHAPE":  # an NHWC head map → anchors × values per anchor
            per_anchor = int(graph.Tensors(op.Outputs(0)).ShapeAsNumpy()[-1])
            steps.append(("reshape", ins[0][0], out, per_anchor))
        elif kind in ("RELU", "ADD", "CONCATENATION"):
            steps.append((kind.lower(), ins[0][0], out, [i[0] for i in ins]))
        else:
            raise GateError(f"BlazeFace layer {out} uses {kind}, which the builder does not know")
    first = graph.Tensors(graph.Inputs(0)).Name().decode()

    class BlazeFace(nn.Module):
        """Input N×3×128×128 RGB in [-1, 1]; outputs regressors N×896×16, logits N×896×1."""

        def __init__(self) -> None:
            super().__init__()
            self.params = params

        def forward(self, image):
            values = {first: image}
            for step in steps:
                kind, x, out = step[0], values[step[1]], step[2]
                if kind == "conv":
                    _, _, _, key, stride, groups, same, fused = step
                    w = self.params[key + "_w"]
                    if same:
                        size, k = x.shape[-1], w.shape[-1]
                        total = max((-(-size // stride) - 1) * stride + k - size, 0)
                        before, after = total // 2, total - total // 2
                        x = F.pad(x, (before, after, before, after))
                    x = F.conv2d(x, w, self.params[key + "_b"], stride=stride, groups=groups)
                    values[out] = F.relu(x) if fused == 1 else x
                elif kind == "pool":
                    values[out] = F.max_pool2d(x, step[3], step[4])
                elif kind == "pad":
                    values[out] = F.pad(x, (0, 0, 0, 0, *step[3]))
                elif kind == "relu":
                    values[out] = F.relu(x)
                elif kind == "add":
                    values[out] = x + values[step[3][1]]
                elif kind == "reshape":
                    values[out] = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, step[3])
                else:  # concatenation along the anchors
                    values[out] = torch.cat([values[n] for n in step[3]], dim=1)
            return values["regressors"], values["classificators"]

    return BlazeFace()


@dataclass
class Source:
    """One training picture and its labelled faces (x, y, w, h; detector-like boxes)."""

    image: np.ndarray  # BGR
    faces: list[Box]
    masked: list[bool]
    validation: bool


def load_sources(datasets: Path, log: Callable[[str], None]) -> list[Source]:
    """Training pictures of both sets; held-out test images are never opened.

    Scene faces keep their VOC boxes, turned into the square BlazeFace draws
    (`detector_like_box`). A face-mask crop holds one face; its box is the
    centred square `box_in_face_image` falls back to, and the teacher's own box
    replaces it wherever the teacher finds the face.
    """
    scenes = datasets / "face-mask-scenes"
    crops = datasets / "face-mask"
    if not scenes.is_dir():
        raise GateError(f"training data not found: {scenes}")
    sources = []
    for item in read_voc(scenes):
        if in_test_split(item.image) or not item.faces:
            continue
        image = cv2.imread(str(item.image))
        if image is None:
            continue
        sources.append(
            Source(
                image,
                [detector_like_box(f.box) for f in item.faces],
                [f.label == "mask" for f in item.faces],
                split_position(item.image, VAL_SEED) < VAL_SHARE,
            )
        )
    n_scenes = len(sources)
    if crops.is_dir():
        for folder, masked in (("with_mask", True), ("without_mask", False)):
            for path in sorted((crops / folder).glob("*")):
                if in_test_split(path, SPLIT_SEED):
                    continue
                image = cv2.imread(str(path))
                if image is None or min(image.shape[:2]) < 40:
                    continue
                h, w = image.shape[:2]
                side = int(0.8 * min(h, w))
                box = ((w - side) // 2, (h - side) // 2, side, side)
                sources.append(Source(image, [box], [masked], False))
    log(f"{n_scenes} scene pictures and {len(sources) - n_scenes} face crops for training")
    return sources


def door_sample(
    source: Source, rng: np.random.Generator, fixed: bool = False, target: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """One network input (128×128×3 RGB uint8, letterboxed 4:3) re-framed around a random face
    (or face `target`) of `source` as a door camera sees it, with the faces it holds as [0, 1] boxes, and the
    index of the chosen face among them.

    `fixed` uses the evaluation framing: the face 30 % of the width, its centre at 0.42 of
    the height, no augmentation.
    """
    if target is None:
        target = int(rng.integers(len(source.faces)))
    x, y, w, h = source.faces[target]
    if fixed:
        share, fx, fy, flip, angle = 0.30, 0.5, 0.42, False, 0.0
    else:
        share = rng.uniform(0.16, 0.5)
        fx, fy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6)
        flip, angle = rng.random() < 0.5, rng.normal(0, 6)
    width = w / share
    out_w, out_h = INPUT_SIZE, INPUT_SIZE * 3 // 4
    k = out_w / width
    cx, cy = x + w / 2, y + h / 2
    # Face centre → (fx, fy) of the window, rotated by `angle` about it.
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, k)
    m[:, 2] += (fx * out_w - cx, fy * out_h - cy)
    border = cv2.BORDER_REPLICATE if fixed or rng.random() < 0.7 else cv2.BORDER_REFLECT
    window = cv2.warpAffine(
        source.image, m, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=border
    )
    if flip:
        window = window[:, ::-1]
    if not fixed:
        window = _photometric(window, rng)
    pad = (INPUT_SIZE - out_h) // 2
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    canvas[pad : pad + out_h] = window
    boxes = []
    for bx, by, bw, bh in source.faces:
        corners = np.array([[bx, by, 1], [bx + bw, by, 1], [bx, by + bh, 1], [bx + bw, by + bh, 1]])
        pts = corners @ m.T
        side = bw * k  # rotation keeps the square's size; its centre moves
        ccx, ccy = pts[:, 0].mean(), pts[:, 1].mean()
        if flip:
            ccx = out_w - ccx
        ccy += pad
        boxes.append([ccx - side / 2, ccy - side / 2, ccx + side / 2, ccy + side / 2])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), np.array(boxes, np.float32) / INPUT_SIZE, target


def _photometric(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light, colour, blur, noise and JPEG, as door cameras vary."""
    x = window.astype(np.float32)
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean()
    if rng.random() < 0.15:
        x[:] = x.mean(axis=2, keepdims=True)
    x *= rng.uniform(0.9, 1.1, size=3)
    x += rng.normal(0, rng.uniform(0, 6), x.shape)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.5:
        _, jpg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 95))])
        out = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return out


def _to_input(rgb_batch: np.ndarray):  # -> torch.Tensor
    import torch

    return torch.from_numpy(rgb_batch.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4), x0 y0 x1 y1."""
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def targets(
    faces: np.ndarray, teacher_reg: np.ndarray, teacher_logit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one input: per-anchor class target (1, 0, or -1 to ignore), regression target
    (896, 16) and which anchors carry a box loss.

    Each labelled face takes the teacher's box where the teacher finds it (so the student
    keeps BlazeFace's framing), else its detector-like box. Anchors whose teacher box
    overlaps a face's box by POSITIVE_IOU fire for it; a face the teacher cannot box at all
    takes the anchors nearest its centre. Anchors where the teacher is sure of a face nobody
    labelled are ignored rather than taught to stay silent.
    """
    boxes, _ = decode(teacher_reg)
    teacher_score = scores_of(teacher_logit)
    cls = np.zeros(len(ANCHORS), np.float32)
    reg = teacher_reg.copy()
    with_box = np.zeros(len(ANCHORS), bool)
    if len(faces):
        overlap = _iou_matrix(boxes, faces)  # anchors × faces
        for f, face in enumerate(faces):
            good = (overlap[:, f] >= 0.4) & (teacher_score >= 0.1)
            target = boxes[np.argmax(np.where(good, teacher_score, -1))] if good.any() else face
            t_overlap = _iou_matrix(boxes, target[None])[:, 0]
            positive = t_overlap >= POSITIVE_IOU
            if not positive.any():
                centre = (target[:2] + target[2:]) / 2
                positive = np.zeros(len(ANCHORS), bool)
                positive[np.argsort(np.abs(ANCHORS - centre).sum(1))[:4]] = True
            cls[positive] = 1
            with_box |= positive
            cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
            reg[positive, 0] = (cx - ANCHORS[positive, 0]) * INPUT_SIZE
            reg[positive, 1] = (cy - ANCHORS[positive, 1]) * INPUT_SIZE
            reg[positive, 2] = (target[2] - target[0]) * INPUT_SIZE
            reg[positive, 3] = (target[3] - target[1]) * INPUT_SIZE
        near = overlap.max(axis=1)
        cls[(cls == 0) & (near >= NEGATIVE_IOU)] = -1
    cls[(cls == 0) & (teacher_score >= TEACHER_SURE)] = -1
    return cls, reg, with_box


def door_scores(
    net, samples: list[tuple[np.ndarray, np.ndarray, int, bool]], threshold: float = 0.5
) -> dict:
    """Door-framed validation: the share of masked and of other faces the net finds (IoU ≥ 0.4
    with the chosen face at `threshold`), and its finds per frame that match no face."""
    import torch

    from gate.camera.blazeface import weighted_nms

    found = {True: [0, 0], False: [0, 0]}
    spurious = 0
    net.eval()
    with torch.no_grad():
        for start in range(0, len(samples), 64):
            chunk = samples[start : start + 64]
            reg, logit = net(_to_input(np.stack([s[0] for s in chunk])))
            for (_, faces, target, masked), r, lg in zip(
                chunk, reg.numpy(), logit.numpy()[..., 0], strict=True
            ):
                scores = scores_of(lg)
                keep = scores >= threshold
                boxes, kps = decode(r[keep], ANCHORS[keep])
                finds = (
                    np.array([b for b, _, _ in weighted_nms(boxes, kps, scores[keep])])
                    if keep.any()
                    else np.zeros((0, 4))
                )
                overlap = _iou_matrix(finds, faces) if len(finds) else np.zeros((0, len(faces)))
                found[masked][1] += 1
                found[masked][0] += bool(len(finds)) and overlap[:, target].max() >= 0.4
                spurious += int((overlap.max(axis=1) < 0.2).sum()) if len(finds) else 0
    return {
        "masked_found": found[True][0] / max(1, found[True][1]),
        "unmasked_found": found[False][0] / max(1, found[False][1]),
        "false_per_frame": spurious / max(1, len(samples)),
        "n_masked": found[True][1],
        "n_unmasked": found[False][1],
    }


def train_detector(
    datasets: Path,
    teacher_model: Path,
    out: Path,
    *,
    epochs: int = 12,
    steps_per_epoch: int = 150,
    batch: int = 32,
    learning_rate: float = 3e-4,
    seed: int = 7,
    threads: int = 2,
    max_minutes: float = 40.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune BlazeFace on door-framed faces and write the best epoch as ONNX; returns the
    report (also written beside `out` as .train.json)."""
    _require_torch()
    import torch
    from torch.nn import functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    sources = load_sources(datasets, log)
    training = [s for s in sources if not s.validation]
    val_rng = np.random.default_rng(seed + 1)
    validation = []
    for s in (s for s in sources if s.validation):
        for i, face in enumerate(s.faces):
            if face[2] < 60:
                continue
            img, faces, _ = door_sample(s, val_rng, fixed=True, target=i)
            validation.append((img, faces, i, s.masked[i]))
    teacher = build_net(teacher_model).eval()
    student = build_net(teacher_model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    before = door_scores(teacher, validation)
    log(f"teacher on {len(validation)} door-framed validation faces: {before}")
    history, best, best_state = [], -1.0, None
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        student.train()
        losses = []
        for _ in range(steps_per_epoch):
            picks = [
                door_sample(training[int(rng.integers(len(training)))], rng) for _ in range(batch)
            ]
            x = _to_input(np.stack([p[0] for p in picks]))
            with torch.no_grad():
                t_reg, t_logit = teacher(x)
            made = [
                targets(p[1], r, lg)
                for p, r, lg in zip(picks, t_reg.numpy(), t_logit.numpy()[..., 0], strict=True)
            ]
            cls = torch.from_numpy(np.stack([m[0] for m in made]))
            reg_t = torch.from_numpy(np.stack([m[1] for m in made]))
            with_box = torch.from_numpy(np.stack([m[2] for m in made]))
            s_reg, s_logit = student(x)
            logit = s_logit[..., 0]
            per_anchor = F.binary_cross_entropy_with_logits(
                logit, cls.clamp(min=0), reduction="none"
            )
            positive = cls > 0
            negative_loss = torch.where(cls == 0, per_anchor, torch.zeros_like(per_anchor))
            n_neg = (positive.sum(1) * NEGATIVES_PER_POSITIVE).clamp(min=16)
            ranked = negative_loss.sort(dim=1, descending=True).values
            keep = torch.arange(ranked.shape[1])[None, :] < n_neg[:, None]
            cls_loss = (per_anchor[positive].sum() + ranked[keep].sum()) / max(
                1, int(positive.sum())
            )
            diff = (s_reg - reg_t).abs() / INPUT_SIZE
            box_loss = diff[..., :4][with_box].sum() / max(1, int(with_box.sum()))
            kp_loss = diff[..., 4:].mean()
            loss = cls_loss + 20 * box_loss + 5 * kp_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        scores = door_scores(student, validation)
        # Masked faces found, without finding more phantom faces than the teacher does.
        merit = (
            scores["masked_found"]
            + 0.5 * scores["unmasked_found"]
            - max(0.0, scores["false_per_frame"] - before["false_per_frame"])
        )
        history.append(
            {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), **scores, "merit": merit}
        )
        log(f"epoch {epoch}: loss {np.mean(losses):.4f} {scores}")
        if merit > best:
            best, best_state = (
                merit,
                {k: v.detach().clone() for k, v in student.state_dict().items()},
            )
        if (time.monotonic() - started) / 60 > max_minutes:
            log(f"stopping after epoch {epoch}: --max-minutes {max_minutes} reached")
            break
    student.load_state_dict(best_state)
    student.eval()
    torch.onnx.export(
        student, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(out),
        input_names=["image"], output_names=["regressors", "logits"], opset_version=17, dynamo=False,
    )  # fmt: skip
    kept = max(history, key=lambda h: h["merit"])
    report = {"teacher": before, "kept": kept, "history": history, "minutes": round((time.monotonic() - started) / 60, 1),
              "settings": {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch": batch, "learning_rate": learning_rate, "seed": seed}}  # fmt: skip
    out.with_suffix(".train.json").write_text(json.dumps(report, indent=1))
    return report
