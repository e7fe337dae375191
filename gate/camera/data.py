"""Reading the mask data sets, and the one split rule that training and eval share.

Keeping the split in one function is what makes the held-out numbers honest:
`gate train` skips every image that `in_test_split` claims, and `gate eval
--split test` scores only those.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gate.camera.verdict import Box, MaskLabel
from gate.errors import GateError

SPLIT_SEED = 2021
TEST_SHARE = 0.2
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

CLASS_NAMES: dict[str, MaskLabel] = {
    "mask": MaskLabel.MASK,
    "with_mask": MaskLabel.MASK,
    "no_mask": MaskLabel.NO_MASK,
    "without_mask": MaskLabel.NO_MASK,
    "incorrect_mask": MaskLabel.INCORRECT_MASK,
    "mask_weared_incorrect": MaskLabel.INCORRECT_MASK,
    "with_incorrect_mask": MaskLabel.INCORRECT_MASK,
}


def split_position(image: Path | str, seed: int = SPLIT_SEED) -> float:
    """Where an image falls in [0, 1) for splitting: SHA-256 of "<seed>:<file stem>",
    first 8 bytes as an integer, divided by 2**64. It depends on the file name alone,
    so an image never changes sides when others are added or removed."""
    digest = hashlib.sha256(f"{seed}:{Path(image).stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_test_split(image: Path | str, seed: int = SPLIT_SEED, share: float = TEST_SHARE) -> bool:
    """True if this image belongs to the held-out test split (its position below `share`)."""
    return split_position(image, seed) < share


def select_split(paths: list[Path], split: str) -> list[Path]:
    """Filter by split name: 'all', 'train' or 'test'."""
    if split == "all":
        return paths
    if split not in ("train", "test"):
        raise GateError(f"unknown split '{split}': use all, train or test")
    want_test = split == "test"
    return [p for p in paths if in_test_split(p) == want_test]


def label_of(name: str) -> MaskLabel | None:
    return CLASS_NAMES.get(name.strip().lower())


@dataclass(frozen=True)
class VocFace:
    box: Box  # x, y, w, h
    label: MaskLabel


@dataclass(frozen=True)
class VocImage:
    image: Path
    faces: tuple[VocFace, ...]


def is_voc(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "annotations").is_dir()


def read_voc(root: Path) -> list[VocImage]:
    """All annotated images of a Pascal VOC set (`images/` + `annotations/`)."""
    items = []
    for xml in sorted((root / "annotations").glob("*.xml")):
        try:
            tree = ET.parse(xml)
        except ET.ParseError as exc:
            raise GateError(f"bad VOC annotation {xml}: {exc}") from None
        filename = tree.findtext("filename") or f"{xml.stem}.jpg"
        faces = []
        for obj in tree.iterfind("object"):
            label = label_of(obj.findtext("name") or "")
            bb = obj.find("bndbox")
            if label is None or bb is None:
                continue
            x0, y0, x1, y1 = (
                int(float(bb.findtext(k) or 0)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            if x1 > x0 and y1 > y0:
                faces.append(VocFace((x0, y0, x1 - x0, y1 - y0), label))
        items.append(VocImage(root / "images" / filename, tuple(faces)))
    return items


def read_class_folders(root: Path) -> list[tuple[Path, MaskLabel]]:
    """(image, label) for every image in class-named sub-folders of `root`."""
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = label_of(sub.name)
        if label is None:
            continue
        found.extend((f, label) for f in _images(sub))
    if not found:
        names = ", ".join(sorted(CLASS_NAMES))
        raise GateError(f"no class folders in {root}: expected sub-folders named {names}")
    return found


def _images(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES)
