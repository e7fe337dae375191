"""Out-of-fold scores of mask-model recipes: prints figures, asserts nothing.

    .venv/bin/python benchmarks/cv_score.py RUNS_DIR [RUNS_DIR ...]

Each RUNS_DIR holds the `*.train.json` reports of one recipe trained once per
fold (`gate train --fold K --folds N ...`). The last epoch's validation
log-probabilities of each fold were never used to choose anything, so together
they score the recipe on every found training face at least 40 px wide, about
five times the faces of the default validation part. With two or more recipes
it also scores their average (a merged model) and a paired bootstrap of the
accuracy differences, so a gap can be told from noise.

`--bias 0,0.75,1` also scores the last line (the average, or the one recipe)
with that log-prior offset, and `--calibrate` searches the offset on these
faces as `gate models merge` does on the 289 validation faces: a steadier
estimate from about eight times the faces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gate.camera.train import calibrate_bias, target_score

LABELS = ("mask", "incorrect_mask", "no_mask")


def load_recipe(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fold name -> (labels, last-epoch log-probabilities) for one recipe."""
    folds = {}
    for path in sorted(folder.glob("*.train.json")):
        report = json.loads(path.read_text())
        if "val_logp_last_epoch" not in report:
            continue
        folds[report["validation"]] = (
            np.array(report["val_labels"]),
            np.array(report["val_logp_last_epoch"]),
        )
    if not folds:
        raise SystemExit(f"{folder}: no fold reports (train with --fold)")
    return folds


def parse_bias(text: str) -> np.ndarray:
    values = [float(v) for v in text.split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("a bias is three numbers: mask,incorrect_mask,no_mask")
    return np.array(values, np.float32)


def scores(labels: np.ndarray, logp: np.ndarray) -> dict[str, float]:
    pred = logp.argmax(1)
    out = {"accuracy": float((pred == labels).mean())}
    for i, name in enumerate(LABELS):
        out[f"recall_{name}"] = float((pred[labels == i] == i).mean())
    return out


def bootstrap_gap(right_a: np.ndarray, right_b: np.ndarray, rounds: int = 2000) -> str:
    """Share right of b minus a, with a 95 % interval from resampling faces (paired)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(right_a), (rounds, len(right_a)))
    gaps = right_b[idx].mean(1) - right_a[idx].mean(1)
    low, high = np.percentile(gaps, [2.5, 97.5])
    return f"{right_b.mean() - right_a.mean():+.3f} (95 % interval {low:+.3f} to {high:+.3f})"


def compare(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    """b against a: accuracy, and recall of the two classes the issue sets goals for."""
    right_a, right_b = a.argmax(1) == labels, b.argmax(1) == labels
    parts = [f"accuracy {bootstrap_gap(right_a, right_b)}"]
    for i in (2, 1):
        sel = labels == i
        parts.append(f"{LABELS[i]} recall {bootstrap_gap(right_a[sel], right_b[sel])}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one folder of fold reports per recipe")
    parser.add_argument("--bias", type=parse_bias, help="also score the last line with it")
    parser.add_argument("--calibrate", action="store_true", help="search a bias on these faces")
    args = parser.parse_args()
    recipes = {folder.name: load_recipe(folder) for folder in args.runs}
    common = sorted(set.intersection(*(set(r) for r in recipes.values())))
    labels = np.concatenate([next(iter(recipes.values()))[f][0] for f in common])
    for name, folds in recipes.items():
        if not np.array_equal(np.concatenate([folds[f][0] for f in common]), labels):
            raise SystemExit(f"{name}: its folds hold other faces (another cache or data set)")
    logps = {name: np.concatenate([folds[f][1] for f in common]) for name, folds in recipes.items()}
    if len(recipes) > 1:
        logps["average of all"] = np.mean(list(logps.values()), axis=0)
    counts = np.bincount(labels, minlength=3).tolist()
    print(f"{len(common)} folds, {len(labels)} faces (mask, incorrect, no_mask: {counts})")
    for name, logp in logps.items():
        s = scores(labels, logp)
        print(
            f"{name:24} " + "  ".join(f"{k.removeprefix('recall_')} {v:.3f}" for k, v in s.items())
        )
    names = list(logps)
    for other in names[1:]:
        print(f"{other} vs {names[0]}: {compare(labels, logps[names[0]], logps[other])}")
    last = logps[names[-1]]
    biases = [args.bias] if args.bias is not None else []
    if args.calibrate:
        biases.append(calibrate_bias(last, labels))
    for bias in biases:
        s = scores(labels, last + bias)
        figures = "  ".join(f"{k.removeprefix('recall_')} {v:.3f}" for k, v in s.items())
        print(f"{names[-1]} + bias {bias.tolist()}: {figures}  goal score {target_score(s):.3f}")


if __name__ == "__main__":
    main()
