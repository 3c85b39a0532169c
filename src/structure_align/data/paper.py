"""Loaders of the paper profile's datasets from user-provided copies in their official on-disk formats.

paper-spec §6 (training on COCO 2014 captions) and §7 (zero-shot: STL10, CIFAR-10/100, ImageNet, ...; retrieval:
Flickr30k, COCO). None of these can be downloaded here, so every source is ``client="local"``: place (or symlink)
the files under ``resources/<source>/`` and run ``acquire(<source>)``, which checks the expected paths and records
``SOURCE.json``; a builder's ``root`` option points it at another folder when it is called directly. Every builder
checks the files it needs first and raises ``FileNotFoundError`` naming the missing file.

Zero-shot class names and prompt templates follow CLIP-benchmark (used by the released code through
``DATASETS_TO_TEMPLATES``): the template lists are read at run time from the installed ``clip_benchmark`` package data
(18 for CIFAR-10/100, 2 for STL10) and from ``open_clip`` (80 OpenAI templates and the 1000 CLIP class names for
ImageNet). When ``clip_benchmark`` is not installed the single template "a photo of a {}." is used (what the released
code falls back to) and ``counts["templates_source"]`` says so.

CIFAR batches are Python pickles by format. They are read with a restricted unpickler that only resolves the numpy
array reconstruction helpers, so a tampered file cannot run code; use only the official archives.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..utils import atomic_write
from .manifest import stratified_subset
from .registry import DatasetInfo, SourceSpec, register_dataset, register_source

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FALLBACK_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
LOCAL_VERSION = "local"


# -- shared helpers ------------------------------------------------------------------------------------------------

def _root(resources_dir: str | os.PathLike, source: str, root: str | os.PathLike | None) -> Path:
    """The dataset folder: ``root`` when given, else ``resources_dir/<source>``; it must exist."""
    path = Path(root) if root is not None else Path(resources_dir) / source
    if not path.is_dir():
        raise FileNotFoundError(f"{source}: data folder {path} does not exist; place the official files there "
                                f"(or pass root=...)")
    return path


def _require(path: Path, source: str, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{source}: expected {path} ({what})")
    return path


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _write_png(pixels: np.ndarray, target: Path) -> None:
    """PNG-encode an HxWx3 uint8 array; an identical existing file is left alone (rebuilds stay cheap)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buf, format="PNG")
    data = buf.getvalue()
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    with atomic_write(target) as tmp:
        tmp.write_bytes(data)


def _check_images_exist(paths: Sequence[Path], source: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: {len(missing)} of {len(paths)} image files are missing, "
                                f"e.g. expected {missing[0]}")


def _subset(df: pd.DataFrame, strata: Sequence[int] | np.ndarray, limit: int | None, seed: int) -> pd.DataFrame:
    keep = stratified_subset(np.asarray(strata, dtype=np.int64), limit, seed)
    return df.iloc[keep].reset_index(drop=True)


def _check_split(split: str, allowed: Sequence[str], source: str) -> None:
    if split not in allowed:
        raise ValueError(f"{source}: option split={split!r} is not one of {list(allowed)}")


def clip_benchmark_templates(dataset: str) -> tuple[list[str], str]:
    """CLIP-benchmark's English zero-shot templates for ``dataset`` as ``{}`` format strings, and where they came
    from; falls back to :data:`FALLBACK_TEMPLATES` when the package data is not installed."""
    try:
        from importlib.resources import files

        data = files("clip_benchmark.datasets").joinpath("en_zeroshot_classification_templates.json").read_text()
        templates = json.loads(data)[dataset]
        return [t.replace("{c}", "{}") for t in templates], f"clip_benchmark:{dataset}"
    except (ModuleNotFoundError, FileNotFoundError, KeyError) as exc:
        log.warning("clip_benchmark templates for %s unavailable (%s); using %s", dataset, exc, FALLBACK_TEMPLATES)
        return list(FALLBACK_TEMPLATES), "fallback: a photo of a {}."


def _open_clip_metadata() -> ModuleType:
    """open_clip's ``zero_shot_metadata`` module, loaded from its file.

    Importing it through ``open_clip`` would import torch, timm and transformers (~10 s on a small CPU) for two
    plain lists; the module itself imports nothing.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed; it provides the ImageNet class names and templates")
    path = Path(next(iter(spec.submodule_search_locations))) / "zero_shot_metadata.py"
    file_spec = importlib.util.spec_from_file_location("_structure_align_open_clip_zsm", path)
    if file_spec is None or file_spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def openai_imagenet() -> tuple[list[str], list[str]]:
    """The 1000 CLIP ImageNet class names (standard sorted-wnid order) and the 80 OpenAI templates, from open_clip."""
    zsm = _open_clip_metadata()
    templates = [t("{}") if callable(t) else str(t) for t in zsm.OPENAI_IMAGENET_TEMPLATES]
    return list(zsm.IMAGENET_CLASSNAMES), templates


def _row(sample_id: str, image_path: Path, captions: list[str], label: int, split: str, source: str) -> dict:
    return {"sample_id": sample_id, "image_path": str(image_path), "captions": captions, "label": int(label),
            "split": split, "source": source, "version": LOCAL_VERSION}


# -- COCO captions 2014 --------------------------------------------------------------------------------------------

COCO_SPLITS = {"train": "train", "val": "test"}


def load_coco_captions(json_path: Path) -> list[tuple[int, str, list[str]]]:
    """``(image_id, file_name, captions)`` per image of a ``captions_*2014.json``, images in id order and captions in
    annotation-id order; images without a caption are dropped."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{json_path}: key {key!r} is missing (not a COCO captions file)")
    caps: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        text = _clean(ann["caption"])
        if text:
            caps.setdefault(int(ann["image_id"]), []).append((int(ann.get("id", 0)), text))
    out = []
    for img in sorted(data["images"], key=lambda im: int(im["id"])):
        entries = sorted(caps.get(int(img["id"]), []))
        if entries:
            out.append((int(img["id"]), str(img["file_name"]), [t for _, t in entries]))
    return out


def build_coco(root: Path, *, splits: Sequence[str] = ("train", "val"), limit: int | None = None, seed: int = 0,
               check_images: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """COCO 2014 captions: one row per image with all its captions; train2014 -> ``train``, val2014 -> ``test``."""
    source = "coco"
    plan = []
    for split in splits:
        _check_split(split, list(COCO_SPLITS), source)
        ann = _require(root / "annotations" / f"captions_{split}2014.json", source, f"COCO {split} captions")
        img_dir = _require(root / f"{split}2014", source, f"COCO {split} image folder")
        plan.append((split, ann, img_dir))
    rows, strata = [], []
    counts: dict[str, Any] = {}
    for k, (split, ann, img_dir) in enumerate(plan):
        images = load_coco_captions(ann)
        paths = [img_dir / name for _, name, _ in images]
        if check_images:
            _check_images_exist(paths, source)
        counts[f"{split}_images"] = len(images)
        counts[f"{split}_captions"] = sum(len(c) for _, _, c in images)
        for (image_id, _, captions), path in zip(images, paths):
            rows.append(_row(f"{split}2014/{image_id}", path, captions, -1, COCO_SPLITS[split], source))
            strata.append(k)
    df = _subset(pd.DataFrame(rows), strata, limit, seed)
    counts["rows"] = len(df)
    info = DatasetInfo(name="coco", task="pairs", source=source, version=LOCAL_VERSION, counts=counts,
                       description="MS-COCO 2014 captions (train2014 = train, val2014 = test), all captions per image")
    return df, info


# -- Flickr30k -----------------------------------------------------------------------------------------------------

KARPATHY_SPLITS = {"train": "train", "restval": "train", "test": "test"}


def load_karpathy(json_path: Path) -> list[tuple[str, str, list[str]]]:
    """``(filename, karpathy split, captions)`` per image of ``dataset_flickr30k.json`` (``sentences[].raw``)."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    if "images" not in data:
        raise ValueError(f"{json_path}: key 'images' is missing (not a Karpathy split file)")
    out = []
    for i, img in enumerate(data["images"]):
        for key in ("filename", "split", "sentences"):
            if key not in img:
                raise ValueError(f"{json_path}: images[{i}] lacks key {key!r}")
        caps = [_clean(s["raw"]) for s in img["sentences"] if _clean(s.get("raw", ""))]
        out.append((str(img["filename"]), str(img["split"]), caps))
    return out


_CSV_REPAIR = re.compile(r"^\s*(\d+)\s+(.*)$")


def load_flickr_csv(csv_path: Path) -> tuple[dict[str, list[str]], int]:
    """Captions per image file of Flickr30k's ``results.csv`` (``image_name| comment_number| comment``).

    Returns ``(captions by image in file order, number of repaired rows)``: a row whose number and comment lost
    their ``|`` separator (it happens once in the official file) is split on the first space instead.
    """
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    if not lines or [h.strip() for h in lines[0].split("|")] != ["image_name", "comment_number", "comment"]:
        raise ValueError(f"{csv_path}: header must be 'image_name| comment_number| comment', got {lines[:1]!r}")
    by_image: dict[str, list[tuple[int, str]]] = {}
    repaired = 0
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) == 2 and (m := _CSV_REPAIR.match(parts[1])):
            parts = [parts[0], m.group(1), m.group(2)]
            repaired += 1
        if len(parts) != 3 or not parts[1].isdigit():
            raise ValueError(f"{csv_path}:{lineno}: cannot parse {line!r}")
        text = _clean(parts[2])
        if text:
            by_image.setdefault(parts[0], []).append((int(parts[1]), text))
    return {name: [t for _, t in sorted(caps)] for name, caps in by_image.items()}, repaired


def _flickr_image_dir(root: Path, image_dir: str) -> Path:
    path = _require(root / image_dir, "flickr30k", "Flickr30k image folder")
    nested = path / Path(image_dir).name  # the Kaggle copy nests flickr30k_images/flickr30k_images/
    return nested if nested.is_dir() and not any(path.glob("*.jpg")) else path


def build_flickr30k(root: Path, *, annotations: str = "auto", image_dir: str = "flickr30k_images",
                    val_split: str = "drop", limit: int | None = None, seed: int = 0,
                    check_images: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """Flickr30k from the Karpathy JSON (split from the file) or ``results.csv`` (split from a Karpathy JSON beside it
    when there is one, otherwise every image is ``test``). Karpathy ``val`` rows are dropped unless
    ``val_split`` is ``train`` or ``test``."""
    source = "flickr30k"
    _check_split(annotations, ["auto", "karpathy", "csv"], f"{source} annotations")
    _check_split(val_split, ["drop", "train", "test"], f"{source} val_split")
    karpathy = root / "dataset_flickr30k.json"
    csvs = [root / "results.csv", root / image_dir / "results.csv"]
    csv_path = next((p for p in csvs if p.is_file()), None)
    if annotations == "karpathy" or (annotations == "auto" and karpathy.is_file()):
        _require(karpathy, source, "Karpathy split file with images[].sentences[].raw")
        records = load_karpathy(karpathy)
        counts: dict[str, Any] = {"annotations": "karpathy"}
    else:
        if csv_path is None:
            raise FileNotFoundError(f"{source}: expected {karpathy} (Karpathy JSON) or one of "
                                    f"{[str(p) for p in csvs]} (results.csv)")
        by_image, repaired = load_flickr_csv(csv_path)
        splits = {name: split for name, split, _ in load_karpathy(karpathy)} if karpathy.is_file() else {}
        counts = {"annotations": "results.csv", "repaired_rows": repaired,
                  "split_source": "karpathy" if splits else "none: every image is test"}
        records = [(name, splits.get(name, "test") if splits else "test", caps) for name, caps in by_image.items()]
    img_dir = _flickr_image_dir(root, image_dir)
    mapping = {**KARPATHY_SPLITS, **({"val": val_split} if val_split != "drop" else {})}
    kept = [(name, mapping[split], caps) for name, split, caps in records if split in mapping and caps]
    counts["dropped_images"] = len(records) - len(kept)
    paths = [img_dir / name for name, _, _ in kept]
    if check_images:
        _check_images_exist(paths, source)
    rows = [_row(Path(name).stem, path, caps, -1, split, source) for (name, split, caps), path in zip(kept, paths)]
    strata = [0 if split == "train" else 1 for _, split, _ in kept]
    df = _subset(pd.DataFrame(rows), strata, limit, seed)
    counts.update({"rows": len(df), "captions": int(sum(len(c) for c in df["captions"]))})
    info = DatasetInfo(name="flickr30k", task="retrieval", source=source, version=LOCAL_VERSION, counts=counts,
                       description="Flickr30k images with their (5) captions; retrieval on the Karpathy test split")
    return df, info


# -- CIFAR-10 / CIFAR-100 (python pickles) --------------------------------------------------------------------------

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1"): harmless
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches: plain containers and numpy arrays only, no other globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def load_cifar_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR python batch (``test_batch``, ``batches.meta``, ``test``, ``meta``); keys decoded to str."""
    try:
        with open(path, "rb") as fh:
            data = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(data, dict):
        # a wrong file, not a wrong argument type: ValueError like every other bad-input error here
        raise ValueError(f"{path}: expected a dict, got {type(data).__name__}")  # noqa: TRY004
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _decode_names(values: Sequence[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


CIFAR_LAYOUT = {
    "cifar10": {"dir": "cifar-10-batches-py", "meta": "batches.meta", "names": "label_names", "labels": "labels",
                "files": {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]}},
    "cifar100": {"dir": "cifar-100-python", "meta": "meta", "names": "fine_label_names", "labels": "fine_labels",
                 "files": {"test": ["test"], "train": ["train"]}},
}


def build_cifar(root: Path, images_dir: Path, *, name: str, split: str = "test", limit: int | None = None,
                seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """CIFAR-10/100 from the official python batches; images written as 32x32 PNG, class names from the meta file
    (underscores become spaces), CLIP-benchmark templates."""
    layout = CIFAR_LAYOUT[name]
    _check_split(split, list(layout["files"]), name)
    base = _require(root / layout["dir"], name, "folder of the official python version")
    meta = load_cifar_pickle(_require(base / layout["meta"], name, "class names"))
    if layout["names"] not in meta:
        raise ValueError(f"{base / layout['meta']}: key {layout['names']!r} is missing")
    classnames = [c.replace("_", " ") for c in _decode_names(meta[layout["names"]])]
    batches = [_require(base / f, name, f"{split} batch") for f in layout["files"][split]]
    pixels, labels = [], []
    for batch in batches:
        data = load_cifar_pickle(batch)
        for key in ("data", layout["labels"]):
            if key not in data:
                raise ValueError(f"{batch}: key {key!r} is missing")
        arr = np.asarray(data["data"], dtype=np.uint8)
        if arr.ndim != 2 or arr.shape[1] != 3072 or len(arr) != len(data[layout["labels"]]):
            raise ValueError(f"{batch}: 'data' has shape {arr.shape}, expected [N, 3072] matching the labels")
        pixels.append(arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel planes, row-major -> HWC
        labels.extend(int(v) for v in data[layout["labels"]])
    images = np.concatenate(pixels)
    label_arr = np.asarray(labels, dtype=np.int64)
    if label_arr.min() < 0 or label_arr.max() >= len(classnames):
        raise ValueError(f"{name}: labels span [{label_arr.min()}, {label_arr.max()}], {len(classnames)} classes")
    keep = stratified_subset(label_arr, limit, seed)
    rows = _array_image_rows(images, label_arr, keep, images_dir, split, name)
    templates, tsource = clip_benchmark_templates(name)
    counts = {f"{split}_images": len(images), "rows": len(rows), "templates_source": tsource}
    info = DatasetInfo(name=name, task="zeroshot", classnames=classnames, templates=templates, source=name,
                       version=LOCAL_VERSION, counts=counts,
                       description=f"{name.upper()} {split} set from the official python batches")
    return pd.DataFrame(rows), info


def _array_image_rows(images: np.ndarray, labels: np.ndarray, keep: np.ndarray, images_dir: Path, split: str,
                      source: str) -> list[dict]:
    """Write the kept [H, W, 3] uint8 images as PNG (``<split>/<index>.png``) and return their manifest rows."""
    rows = []
    for i in tqdm(keep, desc=source, unit="img", leave=False):
        target = images_dir / split / f"{i:05d}.png"
        _write_png(images[i], target)
        rows.append(_row(f"{split}/{i:05d}", target, [], labels[i], split, source))
    return rows


# -- STL10 (binary) ------------------------------------------------------------------------------------------------

STL_SIDE = 96


def load_stl10(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STL10 ``*_X.bin`` (uint8, per image 3 column-major 96x96 planes) -> [N, 96, 96, 3]; ``*_y.bin`` 1-based
    labels -> 0-based int64."""
    raw = np.fromfile(x_path, dtype=np.uint8)
    per = 3 * STL_SIDE * STL_SIDE
    if raw.size % per:
        raise ValueError(f"{x_path}: {raw.size} bytes is not a multiple of 3*96*96")
    images = raw.reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)  # column-major planes -> HWC
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise ValueError(f"{y_path}: {len(labels)} labels for {len(images)} images in {x_path}")
    return images, labels


def build_stl10(root: Path, images_dir: Path, *, split: str = "test", limit: int | None = None,
                seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """STL10 from the official binaries (``stl10_binary/``); images written as 96x96 PNG."""
    source = "stl10"
    _check_split(split, ["test", "train"], source)
    base = _require(root / "stl10_binary", source, "folder of the official binary version")
    x_path = _require(base / f"{split}_X.bin", source, f"{split} images")
    y_path = _require(base / f"{split}_y.bin", source, f"{split} labels")
    names_path = _require(base / "class_names.txt", source, "class names, one per line")
    classnames = [c.strip() for c in names_path.read_text(encoding="utf-8").splitlines() if c.strip()]
    images, labels = load_stl10(x_path, y_path)
    if labels.min() < 0 or labels.max() >= len(classnames):
        raise ValueError(f"{y_path}: labels must be 1..{len(classnames)}, got {labels.min() + 1}..{labels.max() + 1}")
    keep = stratified_subset(labels, limit, seed)
    rows = _array_image_rows(images, labels, keep, images_dir, split, source)
    templates, tsource = clip_benchmark_templates("stl10")
    info = DatasetInfo(name="stl10", task="zeroshot", classnames=classnames, templates=templates, source=source,
                       version=LOCAL_VERSION,
                       counts={f"{split}_images": len(images), "rows": len(rows), "templates_source": tsource},
                       description=f"STL10 {split} set from the official binaries")
    return pd.DataFrame(rows), info


# -- ImageFolder trees (ImageNet val prepared as ImageFolder) ----------------------------------------------------------

_MAPPING_LINE = re.compile(r"^([^\t, ]+)[\t, ]\s*(.+)$")


def read_class_mapping(path: Path, folders: Sequence[str]) -> list[str]:
    """Class names for ``folders`` (sorted folder names) from a mapping file.

    Accepted: JSON object ``{folder: name}`` or list of names in folder order; or text lines ``folder<TAB|,|space>name``
    (e.g. ImageNet's ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca``, of which the first comma-separated
    name is kept). Every folder must be mapped.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            if len(data) != len(folders):
                raise ValueError(f"{path}: {len(data)} names for {len(folders)} class folders")
            return [str(n) for n in data]
        mapping = {str(k): str(v) for k, v in data.items()}
    else:
        mapping = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            m = _MAPPING_LINE.match(line.strip())
            if m is None:
                raise ValueError(f"{path}:{lineno}: expected 'folder<TAB|,|space>name', got {line!r}")
            mapping[m.group(1)] = m.group(2).split(",")[0].strip()
    missing = [f for f in folders if not mapping.get(f)]
    if missing:
        raise ValueError(f"{path}: no class name for folder(s) {missing[:5]}")
    return [mapping[f] for f in folders]


def build_imagefolder(root: Path, *, name: str, source: str, split: str = "test", classnames_file: str | None = None,
                      templates: Sequence[str] | None = None, default_names: Sequence[str] | None = None,
                      default_templates: Sequence[str] | None = None, limit: int | None = None,
                      seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Zero-shot manifest of a ``root/<class>/<image>`` tree (classes = sorted folder names, torchvision order).

    Class names: ``classnames_file`` if given, else ``default_names`` when their number matches the folders, else
    the folder names (underscores become spaces). Images are used in place (no copy).
    """
    _check_split(split, ["test", "train"], source)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{source}: expected class folders under {root} (ImageFolder layout root/<class>/...)")
    if classnames_file is not None:
        mapping_path = Path(classnames_file)
        if not mapping_path.is_absolute() and not mapping_path.exists():
            mapping_path = root.parent / mapping_path  # relative to the dataset folder that holds the tree
        classnames = read_class_mapping(_require(mapping_path, source, "class-name mapping file"), folders)
        names_from = str(mapping_path)
    elif default_names is not None and len(default_names) == len(folders):
        classnames, names_from = list(default_names), "built-in (CLIP)"
    else:
        classnames, names_from = [f.replace("_", " ") for f in folders], "folder names"
    rows, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in (root / folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for path in files:
            rel = path.relative_to(root).as_posix()
            rows.append(_row(rel, path, [], label, split, source))
            labels.append(label)
    if not rows:
        raise FileNotFoundError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
    df = _subset(pd.DataFrame(rows), labels, limit, seed)
    tmpl = list(templates) if templates else list(default_templates or FALLBACK_TEMPLATES)
    counts = {"images": len(rows), "classes": len(folders), "rows": len(df), "classnames_source": names_from,
              "empty_classes": sum(1 for i in range(len(folders)) if i not in set(labels))}
    info = DatasetInfo(name=name, task="zeroshot", classnames=classnames, templates=tmpl, source=source,
                       version=LOCAL_VERSION, counts=counts, description=f"ImageFolder tree {root}")
    return df, info


# -- registration --------------------------------------------------------------------------------------------------

register_source(SourceSpec(name="coco", client="local", package="COCO 2014: annotations/captions_{train,val}2014.json "
                           "+ train2014/ + val2014/", version="", sha256="", files=("annotations",),
                           licence="COCO terms of use; images under their Flickr licences",
                           description="MS-COCO 2014 captions (paper training data)"))
register_source(SourceSpec(name="flickr30k", client="local", package="Flickr30k: dataset_flickr30k.json (Karpathy) "
                           "and/or results.csv + flickr30k_images/", version="", sha256="",
                           files=("flickr30k_images",), licence="Flickr30k terms (non-commercial research)",
                           description="Flickr30k images with 5 captions each (paper retrieval benchmark)"))
register_source(SourceSpec(name="cifar10", client="local", package="cifar-10-python.tar.gz unpacked", version="",
                           sha256="", files=("cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"),
                           description="CIFAR-10 python batches"))
register_source(SourceSpec(name="cifar100", client="local", package="cifar-100-python.tar.gz unpacked", version="",
                           sha256="", files=("cifar-100-python/test", "cifar-100-python/meta"),
                           description="CIFAR-100 python batches"))
register_source(SourceSpec(name="stl10", client="local", package="stl10_binary.tar.gz unpacked", version="",
                           sha256="", files=("stl10_binary/test_X.bin", "stl10_binary/test_y.bin",
                                             "stl10_binary/class_names.txt"),
                           description="STL10 binaries"))
register_source(SourceSpec(name="imagenet", client="local", package="ImageNet-1k val as ImageFolder: val/<wnid>/*",
                           version="", sha256="", files=("val",), licence="ImageNet terms of access",
                           description="ImageNet-1k validation set, 1000 wnid folders"))
register_source(SourceSpec(name="imagefolder", client="local", package="any tree <class>/<image> under images/",
                           version="", sha256="", files=("images",), description="generic ImageFolder tree"))


@register_dataset("coco", sources="coco", task="pairs", description="COCO 2014 captions (train/val)",
                  options={"root": None, "splits": ["train", "val"], "check_images": True})
def _build_coco_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None,
                   splits: Sequence[str] = ("train", "val"), check_images: bool = True, limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_coco(_root(resources_dir, "coco", root), splits=splits, limit=limit, seed=seed,
                      check_images=check_images)


@register_dataset("flickr30k", sources="flickr30k", task="retrieval", description="Flickr30k (Karpathy test split)",
                  options={"root": None, "annotations": "auto", "image_dir": "flickr30k_images", "val_split": "drop",
                           "check_images": True})
def _build_flickr_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, annotations: str = "auto",
                     image_dir: str = "flickr30k_images", val_split: str = "drop", check_images: bool = True,
                     limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_flickr30k(_root(resources_dir, "flickr30k", root), annotations=annotations, image_dir=image_dir,
                           val_split=val_split, limit=limit, seed=seed, check_images=check_images)


def _cifar_builder(name: str):
    @register_dataset(name, sources=name, task="zeroshot", description=f"{name.upper()} (official python batches)",
                      options={"root": None, "split": "test"})
    def _build(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
               limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
        return build_cifar(_root(resources_dir, name, root), Path(images_dir), name=name, split=split, limit=limit,
                           seed=seed)

    _build.__qualname__ = _build.__name__ = f"_build_{name}_ds"
    return _build


_build_cifar10_ds = _cifar_builder("cifar10")
_build_cifar100_ds = _cifar_builder("cifar100")


@register_dataset("stl10", sources="stl10", task="zeroshot", description="STL10 (official binaries)",
                  options={"root": None, "split": "test"})
def _build_stl10_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                    limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_stl10(_root(resources_dir, "stl10", root), Path(images_dir), split=split, limit=limit, seed=seed)


@register_dataset("imagenet", sources="imagenet", task="zeroshot",
                  description="ImageNet-1k val as ImageFolder (CLIP class names, 80 OpenAI templates)",
                  options={"root": None, "subdir": "val", "classnames_file": None, "templates": None})
def _build_imagenet_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, subdir: str = "val",
                       classnames_file: str | None = None, templates: Sequence[str] | None = None,
                       limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    base = _root(resources_dir, "imagenet", root)
    tree = _require(base / subdir, "imagenet", "ImageFolder tree <wnid>/<image>")
    names, openai_templates = openai_imagenet()
    return build_imagefolder(tree, name="imagenet", source="imagenet", split="test", classnames_file=classnames_file,
                             templates=templates, default_names=names, default_templates=openai_templates,
                             limit=limit, seed=seed)


@register_dataset("imagefolder", sources="imagefolder", task="zeroshot", description="generic ImageFolder tree",
                  options={"root": None, "subdir": "images", "classnames_file": None, "templates": None,
                           "split": "test"})
def _build_imagefolder_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, subdir: str = "images",
                          classnames_file: str | None = None, templates: Sequence[str] | None = None,
                          split: str = "test", limit: int | None = None,
                          seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    base = _root(resources_dir, "imagefolder", root)
    tree = _require(base / subdir, "imagefolder", "ImageFolder tree <class>/<image>")
    return build_imagefolder(tree, name="imagefolder", source="imagefolder", split=split,
                             classnames_file=classnames_file, templates=templates, limit=limit, seed=seed)
