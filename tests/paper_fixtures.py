"""Tiny paper datasets in their published formats: the archives a loopback server serves, and the local trees.

:func:`write_published` writes ``<www>/<source>/<file>`` for every url source of the paper profile (COCO caption
zips, CIFAR python tarballs, the STL10 binary tarball, Caltech101's zip with its nested tar.gz, Food-101's tarball,
the two Pets tarballs) and returns the ``downloads.overrides`` that re-pin them; :func:`write_local` writes the two
hand-placed sources (ImageNet val as wnid folders, Flickr30k with its Karpathy JSON). Images are small JPEGs whose
colour depends on the class/caption, so that even tiny random models see some structure.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# 102 class folders like 101_ObjectCategories (the released names are matched to the sorted folders in order)
CALTECH_FOLDERS = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes",
                   "anchor", "ant"] + [f"category_{k:03d}" for k in range(93)]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
WORDS = ["red", "green", "blue", "yellow", "cyan", "magenta"]


def jpeg(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (36, 30)) -> bytes:
    """A noisy JPEG of one colour."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour)[None, None] + rng.integers(-25, 25, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _coco(n_train: int, n_val: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for split, n, start in (("train", n_train, 1), ("val", n_val, 100_000)):
        images, anns, files = [], [], {}
        for k in range(n):
            image_id = start + k
            name = f"COCO_{split}2014_{image_id:012d}.jpg"
            c = k % len(COLOURS)
            images.append({"id": image_id, "file_name": name, "height": 30, "width": 36})
            for j in range(2):
                anns.append({"id": image_id * 10 + j, "image_id": image_id,
                             "caption": f"A {WORDS[c]} picture number {k} ({j})."})
            files[f"{split}2014/{name}"] = jpeg(COLOURS[c], image_id)
        out[f"annotations/captions_{split}2014.json"] = json.dumps({"images": images, "annotations": anns}).encode()
        out[f"{split}2014.zip"] = _zip(files)
    annotations = {k: v for k, v in out.items() if k.startswith("annotations/")}
    return {"annotations_trainval2014.zip": _zip(annotations), "train2014.zip": out["train2014.zip"],
            "val2014.zip": out["val2014.zip"]}


def _cifar_pixels(labels: list[int], seed: int, side: int = 32) -> np.ndarray:
    rows = [np.frombuffer(np.asarray(Image.open(io.BytesIO(jpeg(COLOURS[c % 6], seed + i, (side, side))))
                                     .convert("RGB")).transpose(2, 0, 1).tobytes(), dtype=np.uint8)
            for i, c in enumerate(labels)]
    return np.stack(rows)


def _cifar(n_classes: int, per_class: int, hundred: bool) -> dict[str, bytes]:
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    data = {b"data": _cifar_pixels(labels, 7), (b"fine_labels" if hundred else b"labels"): labels}
    names = [f"class_{WORDS[c % 6]}_{c}".encode() for c in range(n_classes)]
    if hundred:
        files = {"cifar-100-python/test": pickle.dumps(data, protocol=2),
                 "cifar-100-python/meta": pickle.dumps({b"fine_label_names": names}, protocol=2)}
        return {"cifar-100-python.tar.gz": _tgz(files)}
    files = {"cifar-10-batches-py/test_batch": pickle.dumps(data, protocol=2),
             "cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": names}, protocol=2)}
    return {"cifar-10-python.tar.gz": _tgz(files)}


def _stl10(n_classes: int, per_class: int) -> dict[str, bytes]:
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    planes = _cifar_pixels(labels, 11, side=96).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # column-major planes
    files = {"stl10_binary/test_X.bin": np.ascontiguousarray(planes).tobytes(),
             "stl10_binary/test_y.bin": bytes(c + 1 for c in labels),
             "stl10_binary/class_names.txt": "\n".join(WORDS[:n_classes]).encode() + b"\n"}
    return {"stl10_binary.tar.gz": _tgz(files)}


def _caltech(classes: list[str], per_class: int) -> dict[str, bytes]:
    inner = {f"101_ObjectCategories/{c}/image_{k + 1:04d}.jpg": jpeg(COLOURS[i % 6], 100 * i + k)
             for i, c in enumerate(classes) for k in range(per_class)}
    return {"caltech-101.zip": _zip({"caltech-101/101_ObjectCategories.tar.gz": _tgz(inner),
                                     "caltech-101/show_annotation.m": b"% fixture\n"})}


def _food(classes: list[str], per_class: int) -> dict[str, bytes]:
    files = {f"food-101/images/{c}/{1000 + k}.jpg": jpeg(COLOURS[i % 6], 300 + 10 * i + k)
             for i, c in enumerate(classes) for k in range(per_class)}
    files["food-101/meta/classes.txt"] = "\n".join(classes).encode() + b"\n"
    files["food-101/meta/test.txt"] = "\n".join(f"{c}/{1000 + k}" for c in classes for k in range(per_class)).encode()
    return {"food-101.tar.gz": _tgz(files)}


def _pets(breeds: list[str], per_class: int) -> dict[str, bytes]:
    images, test, trainval = {}, [], []
    for i, breed in enumerate(breeds):
        for k in range(per_class * 2):
            name = f"{breed}_{k + 1}"
            images[f"images/{name}.jpg"] = jpeg(COLOURS[i % 6], 500 + 10 * i + k)
            (test if k % 2 else trainval).append(f"{name} {i + 1} {1 + i % 2} {i + 1}")
    return {"images.tar.gz": _tgz(images),
            "annotations.tar.gz": _tgz({"annotations/test.txt": "\n".join(test).encode() + b"\n",
                                        "annotations/trainval.txt": "\n".join(trainval).encode() + b"\n"})}


def write_published(www: Path) -> dict[str, dict[str, dict]]:
    """Write every paper url source's files under ``www/<source>/``; return the re-pinning overrides."""
    sources = {
        "coco": _coco(n_train=48, n_val=18),
        "cifar10": _cifar(4, 5, hundred=False),
        "cifar100": _cifar(5, 4, hundred=True),
        "stl10": _stl10(3, 4),
        "caltech101": _caltech(CALTECH_FOLDERS, 3),
        "food101": _food(["apple_pie", "baby_back_ribs", "sushi"], 5),
        "pets": _pets(["Abyssinian", "american_bulldog", "Bengal"], 3),
    }
    overrides: dict[str, dict[str, dict]] = {}
    for source, files in sources.items():
        (www / source).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (www / source / name).write_bytes(data)
            overrides.setdefault(source, {})[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return overrides


def write_local(resources: Path) -> None:
    """The hand-placed sources: ``imagenet/val/<wnid>/`` and ``flickr30k/`` (images + Karpathy JSON)."""
    for i, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        folder = resources / "imagenet" / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(4):
            (folder / f"ILSVRC2012_val_{i * 10 + k:08d}.JPEG").write_bytes(jpeg(COLOURS[i], 700 + 10 * i + k))
    flickr = resources / "flickr30k"
    (flickr / "flickr30k_images").mkdir(parents=True, exist_ok=True)
    images = []
    for k in range(12):
        name = f"{1000 + k}.jpg"
        c = k % 6
        (flickr / "flickr30k_images" / name).write_bytes(jpeg(COLOURS[c], 900 + k))
        images.append({"filename": name, "split": "test" if k < 8 else "train",
                       "sentences": [{"raw": f"A {WORDS[c]} photo {k}, take {j}."} for j in range(2)]})
    (flickr / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
