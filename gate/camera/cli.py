"""Command-line entry points of the camera room, mounted on the `gate` CLI by `register`.

Every failure is a GateError with one line; the `gate` CLI prints it and exits non-zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from gate.config import DEFAULT_DATA_DIR
from gate.errors import GateError

DEFAULT_DATASETS = Path("../shared/datasets")

models_app = typer.Typer(
    help="Fetch the networks others trained (BlazeFace, FaceMesh); merge and quantize mask models.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Where models are cached (<data_dir>/models).")
]


@models_app.command("fetch")
def models_fetch(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    force: Annotated[
        bool, typer.Option(help="Fetch again even if a verified copy is cached.")
    ] = False,
) -> None:
    """Download BlazeFace (official URL, else the mediapipe wheel) and FaceMesh (the wheel),
    verify their SHA-256, cache them."""
    from gate.camera.models import fetch_models

    fetch_models(data_dir, force=force, log=lambda line: typer.echo(line, err=True))


ScenesFolder = Annotated[
    Path, typer.Option("--datasets", help="Folder holding face-mask-scenes/ (its validation part).")
]
FacesCache = Annotated[
    Path | None, typer.Option("--cache", help="Collected faces written by `gate train --cache`.")
]


@models_app.command("merge")
def models_merge(
    out: Annotated[Path, typer.Argument(help="Where to write the merged ONNX model.")],
    members: Annotated[list[Path], typer.Argument(help="Two or more models from `gate train`.")],
    datasets: ScenesFolder = DEFAULT_DATASETS,
    cache: FacesCache = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Average trained mask models into one and calibrate its bias on the validation part.

    Members trained on different framings become views: one crop of each face per framing.
    """
    from gate.camera.train import merge

    _build_model(merge, out, data_dir, datasets=datasets, members=members, cache=cache)


@models_app.command("quantize")
def models_quantize(
    model: Annotated[Path, typer.Argument(help="A float model from `gate models merge`.")],
    out: Annotated[Path, typer.Argument(help="Where to write the int8 ONNX model.")],
    datasets: ScenesFolder = DEFAULT_DATASETS,
    cache: FacesCache = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    bias: Annotated[
        str | None,
        typer.Option(
            help="Log-prior offsets mask,incorrect_mask,no_mask for the int8 model "
            "(default: the float model's), e.g. 0,0.75,1.25."
        ),
    ] = None,
) -> None:
    """Store a mask model's networks as int8 for speed, and compare both on the validation part.

    Activation ranges are measured on training faces; the report says how many validation
    faces the two models label alike.
    """
    from gate.camera.quantize import quantize

    offsets = None if bias is None else _bias(bias)
    _build_model(
        quantize, out, data_dir, datasets=datasets, model_path=model, cache=cache, bias=offsets
    )


def _bias(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise GateError(f"--bias {text!r}: give three numbers, e.g. 0,0.75,1.25")
    return values[0], values[1], values[2]


def _build_model(build: Callable[..., dict], out: Path, data_dir: Path, **args: object) -> None:
    """Run a model-building step on the cached networks and print its JSON report."""
    from gate.camera.models import detector_path, facemesh_path

    _make_parent(out)
    report = build(
        detector_model=detector_path(data_dir), facemesh_model=facemesh_path(data_dir), out=out,
        log=lambda line: typer.echo(line, err=True), **args,
    )  # fmt: skip
    typer.echo(json.dumps(report, indent=1))


def _make_parent(out: Path) -> None:
    """Create the output's folder up front, so a bad path fails before training, not after."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GateError(f"cannot create the folder {out.parent} ({exc.strerror})") from None


def train(
    datasets: Annotated[
        Path, typer.Option(help="Folder holding face-mask-scenes/ and face-mask/.")
    ] = DEFAULT_DATASETS,
    out: Annotated[Path, typer.Option(help="Where to write the ONNX model.")] = Path(
        "gate/camera/mask_classifier.onnx"
    ),
    epochs: Annotated[int, typer.Option(min=1)] = 60,
    max_minutes: Annotated[
        float, typer.Option(help="Stop after this long, keeping the best epoch.")
    ] = 25.0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    seed: int = 7,
    input_size: Annotated[
        int, typer.Option(help="Crop side in pixels (facemesh-head: always FaceMesh's 192).")
    ] = 64,
    crop_scale: Annotated[
        float, typer.Option(min=0.6, max=2.0, help="Crop side as a multiple of the face box.")
    ] = 1.25,
    crop_shift: Annotated[
        float,
        typer.Option(min=-0.3, max=0.3, help="Crop centre below the box centre, in box sides."),
    ] = 0.0,
    arch: Annotated[
        str, typer.Option(help="vgg, vgg-wide, or facemesh-head (on frozen FaceMesh features).")
    ] = "vgg",
    ema: Annotated[
        float, typer.Option(help="Weight EMA decay per step; 0 keeps the raw weights.")
    ] = 0.0,
    lr: Annotated[float, typer.Option(help="Peak one-cycle learning rate.")] = 3e-3,
    mixup: Annotated[
        float, typer.Option(min=0.0, help="Mixup Beta(a, a) parameter; 0 trains without mixup.")
    ] = 0.0,
    cache: Annotated[
        Path | None,
        typer.Option(help="Reuse (or write) the collected faces here, outside the repo."),
    ] = None,
    fold: Annotated[
        int | None,
        typer.Option(
            min=0, help="Validate on this fold of the training images (cross-validation)."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="How many folds --fold counts.")] = 5,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Train one member of the mask classifier on the training split and export it to ONNX."""
    from gate.camera import facemesh
    from gate.camera.classifier import FACEMESH, Framing
    from gate.camera.models import detector_path, facemesh_path
    from gate.camera.train import ARCHITECTURES, FACEMESH_HEAD
    from gate.camera.train import train as run_training

    if arch not in ARCHITECTURES:
        raise GateError(f"--arch {arch} is not one of {', '.join(ARCHITECTURES)}")
    if fold is not None and fold >= folds:
        raise GateError(f"--fold {fold} is not one of the {folds} folds (0 to {folds - 1})")
    on_facemesh = arch == FACEMESH_HEAD
    frame = (
        Framing(facemesh.INPUT_SIZE, crop_scale, crop_shift, FACEMESH)
        if on_facemesh
        else Framing(input_size, crop_scale, crop_shift)
    )
    _make_parent(out)
    report = run_training(
        datasets, detector_path(data_dir), out, epochs=epochs, max_minutes=max_minutes,
        threads=threads, seed=seed, log=lambda line: typer.echo(line, err=True), frame=frame,
        arch=arch, ema=ema, lr=lr, cache=cache, fold=fold, folds=folds, mixup=mixup,
        facemesh_model=facemesh_path(data_dir) if on_facemesh else None,
    )  # fmt: skip
    bulky = {"history", "val_labels", "val_logp_last_epoch"}  # kept in the .train.json file
    typer.echo(json.dumps({k: v for k, v in report.items() if k not in bulky}, indent=1))


def train_detector(
    out: Annotated[
        Path, typer.Option(help="Where to write the fine-tuned detector (ONNX).")
    ] = Path("face_detector.onnx"),
    datasets: Annotated[
        Path, typer.Option(help="Folder holding face-mask-scenes/ and face-mask/.")
    ] = DEFAULT_DATASETS,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    steps: Annotated[int, typer.Option(min=1, help="Batches per epoch.")] = 80,
    batch: Annotated[int, typer.Option(min=2)] = 32,
    lr: Annotated[float, typer.Option(help="Peak one-cycle learning rate.")] = 3e-4,
    max_minutes: Annotated[float, typer.Option(min=1)] = 40.0,
    threads: Annotated[int, typer.Option(min=1)] = 2,
    seed: int = 7,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Fine-tune BlazeFace (the fetched model) on door-framed faces; keep the best epoch."""
    from gate.camera.models import detector_path
    from gate.camera.train_detector import train_detector as run_training

    _make_parent(out)
    report = run_training(
        datasets, detector_path(data_dir), out, epochs=epochs, steps_per_epoch=steps,
        batch=batch, learning_rate=lr, seed=seed, threads=threads, max_minutes=max_minutes,
        log=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))


VisitEval = Callable[..., dict]  # `gate.visits.evaluate_visits`, handed in by the `gate` CLI


def evaluate(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Class sub-folders of face crops, or a VOC set.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    min_face: Annotated[
        int | None,
        typer.Option(
            help="Only faces at least this wide (px) count: 40 unless --door or --visits (60)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="all, train or test (the held-out 20 %).")] = "all",
    limit: Annotated[
        int | None,
        typer.Option(help="Evaluate an evenly spread subset (of images; door, visits: of faces)."),
    ] = None,
    misses: Annotated[
        Path | None,
        typer.Option(
            help="Write each misclassified face's crop, and misses.csv, to this new folder."
        ),
    ] = None,
    door: Annotated[
        bool,
        typer.Option(
            "--door", help="Re-frame each face of a VOC set as the door camera sees one visitor."
        ),
    ] = False,
    visits: Annotated[
        bool,
        typer.Option(
            "--visits",
            help="Each face of a VOC set as a 1 s visit through the tracker and controller.",
        ),
    ] = False,
    visits_per_face: Annotated[
        int, typer.Option(help="Visits simulated from each face (--visits).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the visits' variation (--visits).")] = 7,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Score detection and mask classification on labelled data: scenes or crops as they are,
    at door framing (--door), or as visits to the door (--visits)."""
    from gate.camera import evaluate as scoring

    if limit is not None and limit < 1:
        raise GateError(f"--limit {limit} must be at least 1")
    if door and visits:
        raise GateError("--door and --visits are two evaluations: give one of them")
    if misses is not None and (door or visits):
        raise GateError("--misses works with the scene evaluation only, not --door or --visits")
    if visits_per_face < 1:
        raise GateError(f"--visits-per-face {visits_per_face} must be at least 1")
    if door or visits:
        faces = scoring.DOOR_MIN_FACE if min_face is None else min_face
        scope = dict(min_face=faces, split=split, limit=limit)
        if door:
            report = scoring.evaluate_door(path, data_dir, **scope)
        else:
            run_visits: VisitEval | None = ctx.obj
            if run_visits is None:
                raise GateError("--visits drives the controller: run it as `gate eval --visits`")
            report = run_visits(path, data_dir, per_face=visits_per_face, seed=seed, **scope)
        typer.echo(json.dumps(report, indent=1) if as_json else _door_text(report))
        return
    faces = scoring.MIN_FACE if min_face is None else min_face
    report = scoring.evaluate(
        path, data_dir, min_face=faces, split=split, limit=limit, misses=misses
    )
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    typer.echo(
        f"{report['n_faces']} faces in {report['n_images']} images: detection recall "
        f"{report['detection_recall']}, accuracy {report['accuracy']}, "
        f"end to end {report['end_to_end_accuracy']}, {report['ms_per_image']} ms/image"
    )
    for name, c in report["per_class"].items():
        typer.echo(f"  {name:15} n={c['n']:5} precision {c['precision']} recall {c['recall']}")
    if misses is not None:
        typer.echo(f"{report['misses']} misclassified faces written to {misses}")


def _door_text(report: dict) -> str:
    """A door or visit report as lines a person reads: the figures, then the confusion."""
    lines = [f"{key:28} {value}" for key, value in report.items() if not isinstance(value, dict)]
    for name in ("confusion", "by_size", "by_label"):
        for row, figures in report.get(name, {}).items():
            shown = ", ".join(f"{k} {v}" for k, v in figures.items())
            lines.append(f"{name} {row}: {shown}")
    return "\n".join(lines)


def bench_vision(
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    frames: Annotated[int, typer.Option(min=10)] = 300,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Time Vision.analyze on 640x480 frames with one face, pinned to one core, beside the
    same pipeline on Google's original BlazeFace."""
    from gate.camera.bench import run_vision_bench

    result = run_vision_bench(data_dir, frames=frames)
    typer.echo(
        json.dumps(result)
        if as_json
        else f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, {result['fps']} fps; "
        f"with Google's BlazeFace in the same run p50 {result['google_detector_p50_ms']} ms "
        f"(ratio {result['ratio_p50']})"
    )


def sim_check(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    looks: Annotated[int, typer.Option(min=1, help="Visitors per mask state.")] = 10,
) -> None:
    """Per-state accuracy and frames-to-decision on the simulated visitors (real models)."""
    from gate.camera.bench import run_simulated_check

    typer.echo(json.dumps(run_simulated_check(data_dir, looks=looks), indent=1))


def register(app: typer.Typer, visits: VisitEval | None = None) -> None:
    """Add `train`, `train-detector`, `eval` and the `models` group to the given app.

    `visits` runs `gate eval --visits`. It drives the controller, which the camera room
    never imports, so the `gate` CLI hands it in (as the command's context object).
    """
    app.command("train")(train)
    app.command("train-detector")(train_detector)
    app.command("eval", context_settings={"obj": visits})(evaluate)
    app.add_typer(models_app, name="models")
