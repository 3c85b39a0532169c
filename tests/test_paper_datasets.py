"""Paper-profile loaders on small fixtures written in the true on-disk formats (no downloads)."""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_fixture import FileServer
from PIL import Image

from structure_align.data import DATASETS, acquire, build_manifest, dataset_texts, read_manifest
from structure_align.data.cifar import load_cifar_pickle
from structure_align.data.flickr30k import load_flickr_csv
from structure_align.data.imagenet import read_class_mapping


def _jpeg(path: Path, color: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path, format="JPEG")
    return path


def _build(name: str, resources: Path, images: Path, **options):
    return DATASETS[name].build(resources, images, **DATASETS[name].resolve_options(options))


# -- COCO -----------------------------------------------------------------------------------------------------------

def _coco(root: Path) -> Path:
    def write(split: str, images: list[tuple[int, list[tuple[int, str]]]]) -> None:
        data = {"info": {}, "licenses": [], "images": [], "annotations": []}
        for image_id, caps in images:
            name = f"COCO_{split}2014_{image_id:012d}.jpg"
            data["images"].append({"id": image_id, "file_name": name, "width": 8, "height": 6})
            _jpeg(root / f"{split}2014" / name)
            for ann_id, text in caps:
                data["annotations"].append({"id": ann_id, "image_id": image_id, "caption": text})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}2014.json").write_text(json.dumps(data))

    write("train", [(9, [(31, "A dog  runs.\n"), (30, "A brown dog.")]), (3, [(40, "Two cats.")]), (5, [])])
    write("val", [(7, [(50, "A red bus."), (51, "A bus on a street ")])])
    return root


def _zip_folder(folder: Path, members: list[str], out: Path) -> dict:
    """Zip ``folder/<member>`` trees into ``out``; returns the override pin of the archive."""
    with zipfile.ZipFile(out, "w") as zf:
        for member in members:
            for path in sorted((folder / member).rglob("*")):
                zf.write(path, path.relative_to(folder).as_posix())
    return {"sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "size": out.stat().st_size}


def test_coco_via_acquire_and_build_manifest(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    tree = _coco(tmp_path / "published")
    www = tmp_path / "www" / "coco"
    www.mkdir(parents=True)
    pins = {name: _zip_folder(tree, [member], www / name) for name, member in (
        ("annotations_trainval2014.zip", "annotations"), ("train2014.zip", "train2014"), ("val2014.zip", "val2014"))}
    with FileServer(tmp_path / "www") as server:  # url source: the published zips, re-pinned for the fixtures
        acquire("coco", resources, mirror=server.url, downloads={"overrides": {"coco": pins}}, progress=False)
    parquet, info = build_manifest("coco", resources, tmp_path / "m", tmp_path / "img")
    df, _ = read_manifest(parquet)
    assert info.task == "pairs"
    assert df["sample_id"].tolist() == ["train2014/3", "train2014/9", "val2014/7"]  # image without captions dropped
    assert [list(c) for c in df["captions"]] == [["Two cats."], ["A brown dog.", "A dog runs."],
                                                 ["A red bus.", "A bus on a street"]]
    assert df["split"].tolist() == ["train", "train", "test"]
    assert info.counts["train_images"] == 2 and info.counts["val_captions"] == 2
    assert Image.open(df["image_path"][0]).size == (8, 6)
    texts, groups = dataset_texts(df, info)
    assert texts[1:3] == ["A brown dog.", "A dog runs."] and groups.tolist() == [0, 1, 1, 2, 2]


def test_coco_errors_name_the_missing_file(tmp_path: Path) -> None:
    root = _coco(tmp_path / "coco")
    (root / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"captions_val2014\.json"):
        _build("coco", tmp_path, tmp_path / "img", root=str(root))
    df, _ = _build("coco", tmp_path, tmp_path / "img", root=str(root), splits=["train"])
    assert set(df["split"]) == {"train"}
    (root / "train2014" / "COCO_train2014_000000000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 image files.*000000000003\.jpg"):
        _build("coco", tmp_path, tmp_path / "img", root=str(root), splits=["train"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _build("coco", tmp_path / "nowhere", tmp_path / "img")


# -- Flickr30k ------------------------------------------------------------------------------------------------------

KARPATHY = {"dataset": "flickr30k", "images": [
    {"filename": "100.jpg", "imgid": 0, "split": "train", "sentids": [0, 1],
     "sentences": [{"raw": "A man  rides a bike.", "tokens": ["a"], "imgid": 0, "sentid": 0},
                   {"raw": "Cyclist on a road.", "tokens": ["c"], "imgid": 0, "sentid": 1}]},
    {"filename": "200.jpg", "imgid": 1, "split": "val", "sentids": [2],
     "sentences": [{"raw": "A lake.", "tokens": ["a"], "imgid": 1, "sentid": 2}]},
    {"filename": "300.jpg", "imgid": 2, "split": "test", "sentids": [3],
     "sentences": [{"raw": "Kids play football.", "tokens": ["k"], "imgid": 2, "sentid": 3}]},
]}
CSV = ("image_name| comment_number| comment\n"
       "100.jpg| 0| A man rides a bike .\n"
       "100.jpg| 1| Cyclist on a road .\n"
       "300.jpg| 1| Children playing .\n"
       "300.jpg| 0 Kids play football .\n"  # the separator lost once, as in the official file
       "200.jpg| 0| A lake .\n")


def _flickr(root: Path, karpathy: bool = True, csv: bool = True) -> Path:
    for name in ("100.jpg", "200.jpg", "300.jpg"):
        _jpeg(root / "flickr30k_images" / name)
    if karpathy:
        (root / "dataset_flickr30k.json").write_text(json.dumps(KARPATHY))
    if csv:
        (root / "flickr30k_images" / "results.csv").write_text(CSV)
    return root


def test_flickr_karpathy(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr30k")
    df, info = _build("flickr30k", tmp_path, tmp_path / "img")
    assert info.task == "retrieval" and info.counts["annotations"] == "karpathy"
    assert df["sample_id"].tolist() == ["100", "300"] and df["split"].tolist() == ["train", "test"]
    assert list(df["captions"][0]) == ["A man rides a bike.", "Cyclist on a road."]
    df, _ = _build("flickr30k", tmp_path, tmp_path / "img", root=str(root), val_split="test")
    assert df["split"].tolist() == ["train", "test", "test"]


def test_flickr_results_csv(tmp_path: Path) -> None:
    _flickr(tmp_path / "flickr30k")
    df, info = _build("flickr30k", tmp_path, tmp_path / "img", annotations="csv")
    assert info.counts["repaired_rows"] == 1 and info.counts["split_source"] == "karpathy"
    row = df[df["sample_id"] == "300"].iloc[0]
    assert list(row["captions"]) == ["Kids play football .", "Children playing ."]  # comment_number order
    assert row["split"] == "test"
    # without a Karpathy file there is no split information: every image is a test image
    (tmp_path / "flickr30k" / "dataset_flickr30k.json").unlink()
    df, info = _build("flickr30k", tmp_path, tmp_path / "img")
    assert len(df) == 3 and set(df["split"]) == {"test"} and info.counts["annotations"] == "results.csv"


def test_flickr_csv_parser_rejects_bad_header(tmp_path: Path) -> None:
    bad = tmp_path / "results.csv"
    bad.write_text("image,caption\n1.jpg,x\n")
    with pytest.raises(ValueError, match="header"):
        load_flickr_csv(bad)
    empty = tmp_path / "flickr30k"
    (empty / "flickr30k_images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"dataset_flickr30k\.json.*results\.csv"):
        _build("flickr30k", tmp_path, tmp_path / "img")


# -- COCO Karpathy 5k test ------------------------------------------------------------------------------------------

def _coco_karpathy(resources: Path) -> Path:
    """``dataset_coco.json`` in Karpathy's format (restval/val/test/train images, 1-3 captions) + the COCO JPEGs."""
    images = []
    plan = [("train2014", "train", 1), ("val2014", "restval", 2), ("val2014", "val", 3), ("val2014", "test", 4),
            ("val2014", "test", 5), ("val2014", "test", 6), ("val2014", "val", 7)]
    for k, (folder, split, cocoid) in enumerate(plan):
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        _jpeg(resources / "coco" / folder / name, (10 * k, 20, 30))
        caps = [{"raw": f"Picture {cocoid},  caption {j}.", "tokens": ["picture"], "imgid": k, "sentid": 10 * k + j}
                for j in range(1 + k % 3)]
        images.append({"filepath": folder, "filename": name, "imgid": k, "cocoid": cocoid, "split": split,
                       "sentids": [c["sentid"] for c in caps], "sentences": caps})
    (resources / "coco_karpathy").mkdir(parents=True, exist_ok=True)
    path = resources / "coco_karpathy" / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_coco_karpathy_test_split_with_grouped_captions(tmp_path: Path) -> None:
    _coco_karpathy(tmp_path)
    df, info = _build("coco_karpathy", tmp_path, tmp_path / "img")
    assert info.task == "retrieval" and DATASETS["coco_karpathy"].sources == ("coco", "coco_karpathy")
    assert df["sample_id"].tolist() == ["val2014/4", "val2014/5", "val2014/6"]
    assert [list(c) for c in df["captions"]] == [["Picture 4, caption 0."],
                                                 ["Picture 5, caption 0.", "Picture 5, caption 1."],
                                                 ["Picture 6, caption 0.", "Picture 6, caption 1.",
                                                  "Picture 6, caption 2."]]
    assert set(df["split"]) == {"test"} and all(Path(p).is_file() for p in df["image_path"])
    assert Path(df["image_path"][0]) == tmp_path / "coco" / "val2014" / "COCO_val2014_000000000004.jpg"
    assert info.counts["karpathy_splits"] == {"restval": 1, "test": 3, "train": 1, "val": 2}
    val, _ = _build("coco_karpathy", tmp_path, tmp_path / "img", split="val")
    assert val["sample_id"].tolist() == ["val2014/3", "val2014/7"]


def test_coco_karpathy_errors_name_the_file(tmp_path: Path) -> None:
    from structure_align.data import AcquireError

    split_file = _coco_karpathy(tmp_path)
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 image files.*COCO_val2014_000000000005\.jpg"):
        _build("coco_karpathy", tmp_path, tmp_path / "img")
    split_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"coco_karpathy/dataset_coco\.json"):
        _build("coco_karpathy", tmp_path, tmp_path / "img")
    with pytest.raises(AcquireError, match=r"caption_datasets\.zip.*resources/coco_karpathy/dataset_coco\.json.*"
                                           r"missing: \['dataset_coco\.json'\]"):
        acquire("coco_karpathy", tmp_path)
    split_file.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "test", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(ValueError, match="no 'filepath'"):
        _build("coco_karpathy", tmp_path, tmp_path / "img")


# -- CIFAR ----------------------------------------------------------------------------------------------------------

def _cifar_pixels(n: int) -> np.ndarray:
    """[n, 3072] rows in the official layout: R plane, G plane, B plane, each 32x32 row-major."""
    red = (np.arange(1024) % 256).astype(np.uint8)
    rows = [np.concatenate([red, np.full(1024, 7, np.uint8), np.full(1024, i, np.uint8)]) for i in range(n)]
    return np.stack(rows)


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_cifar10(tmp_path: Path) -> None:
    base = tmp_path / "cifar10" / "cifar-10-batches-py"
    names = [b"airplane", b"automobile", b"bird"]
    _pickle(base / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    _pickle(base / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [2, 0, 1, 2, 0, 1],
                                  b"data": _cifar_pixels(6), b"filenames": [b"x.png"] * 6})
    df, info = _build("cifar10", tmp_path, tmp_path / "img")
    assert info.classnames == ["airplane", "automobile", "bird"]
    assert df["label"].tolist() == [2, 0, 1, 2, 0, 1] and df["sample_id"][3] == "test/00003"
    img = np.asarray(Image.open(df["image_path"][4]))
    assert img.shape == (32, 32, 3)
    assert tuple(img[1, 2]) == (34, 7, 4)  # R = row*32+col, G = 7, B = image index
    # the released 18 templates, always (package data, no optional package)
    assert len(info.templates) == 18 and info.templates[0] == "a photo of a {}." and info.counts["prompts"] == "released"
    _, simple = _build("cifar10", tmp_path, tmp_path / "img3", prompts="simple")
    assert simple.templates == ["a photo of a {}"] and simple.classnames == info.classnames
    with pytest.raises(ValueError, match=r"prompts='clip' is not one of"):
        _build("cifar10", tmp_path, tmp_path / "img3", prompts="clip")
    sub, _ = _build("cifar10", tmp_path, tmp_path / "img2", limit=3, seed=1)
    assert sorted(sub["label"].tolist()) == [0, 1, 2]


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar100" / "cifar-100-python"
    _pickle(base / "meta", {b"fine_label_names": [b"apple", b"aquarium_fish"], b"coarse_label_names": [b"fruit"]})
    _pickle(base / "test", {b"fine_labels": [1, 0], b"coarse_labels": [0, 0], b"data": _cifar_pixels(2),
                            b"filenames": [b"a.png", b"b.png"]})
    df, info = _build("cifar100", tmp_path, tmp_path / "img")
    assert info.classnames == ["apple", "aquarium fish"] and df["label"].tolist() == [1, 0]
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/train"):
        _build("cifar100", tmp_path, tmp_path / "img", split="train")


def test_cifar_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({"data": collections.OrderedDict(a=1)}))
    with pytest.raises(ValueError, match="collections.OrderedDict is not allowed"):
        load_cifar_pickle(path)


# -- STL10 ----------------------------------------------------------------------------------------------------------

def test_stl10_binaries(tmp_path: Path) -> None:
    base = tmp_path / "stl10" / "stl10_binary"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)  # HWC
    # official layout: per image, the 3 channel planes, each stored column-major
    raw = b"".join(images[i, :, :, c].flatten(order="F").tobytes() for i in range(4) for c in range(3))
    (base / "test_X.bin").write_bytes(raw)
    (base / "test_y.bin").write_bytes(bytes([1, 3, 2, 3]))
    (base / "class_names.txt").write_text("airplane\nbird\ncar\n")
    df, info = _build("stl10", tmp_path, tmp_path / "img")
    assert info.classnames == ["airplane", "bird", "car"]
    assert df["label"].tolist() == [0, 2, 1, 2]
    for i in range(4):
        assert np.array_equal(np.asarray(Image.open(df["image_path"][i])), images[i])
    assert info.templates == ["a photo of a {}.", "a photo of the {}."]
    (base / "test_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ValueError, match="2 labels for 4 images"):
        _build("stl10", tmp_path, tmp_path / "img")
    (base / "class_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"class_names\.txt"):
        _build("stl10", tmp_path, tmp_path / "img")


# -- ImageNet (ImageFolder tree) -------------------------------------------------------------------------------------

def test_imagenet_tree_with_mapping_files(tmp_path: Path) -> None:
    tree = tmp_path / "imagenet" / "val"
    for cls, n in (("n002", 2), ("n001", 3)):
        for k in range(n):
            _jpeg(tree / cls / f"img{k}.JPEG", (k * 40, 0, 0))
    (tree / "n001" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"\['n001', 'n002'\] .* are not ImageNet-1k wnids"):
        _build("imagenet", tmp_path, tmp_path / "img")  # no released name for them: refused, not guessed
    df, info = _build("imagenet", tmp_path, tmp_path / "img", templates=["art of a {}."], prompts="fallback")
    assert info.classnames == ["n001", "n002"] and df["label"].tolist() == [0, 0, 0, 1, 1]
    assert info.counts["classnames_source"] == "files"
    assert df["sample_id"][0] == "n001/img0.JPEG" and info.templates == ["art of a {}."]
    assert df["image_path"][0] == str(tree / "n001" / "img0.JPEG")  # used in place
    (tmp_path / "imagenet" / "map.txt").write_text("n001 tench, Tinca tinca\nn002 goldfish, Carassius auratus\n")
    _, info = _build("imagenet", tmp_path, tmp_path / "img", classnames_file="map.txt")
    assert info.classnames == ["tench", "goldfish"] and len(info.templates) == 80
    (tmp_path / "imagenet" / "map.json").write_text(json.dumps({"n001": "a", "n003": "c"}))
    with pytest.raises(ValueError, match="no class name for folder"):
        _build("imagenet", tmp_path, tmp_path / "img", classnames_file="map.json")
    assert read_class_mapping(tmp_path / "imagenet" / "map.txt", ["n002"]) == ["goldfish"]
    sub, _ = _build("imagenet", tmp_path, tmp_path / "img", limit=2, seed=0, prompts="fallback")
    assert sorted(sub["label"].tolist()) == [0, 1]


def test_imagenet_uses_clip_names_and_openai_templates(tmp_path: Path) -> None:
    val = tmp_path / "imagenet" / "val"
    for k in range(1000):
        (val / f"n{k:08d}").mkdir(parents=True)
    _jpeg(val / "n00000000" / "a.JPEG")
    _jpeg(val / "n00000999" / "b.JPEG")
    df, info = _build("imagenet", tmp_path, tmp_path / "img")
    assert len(info.classnames) == 1000 and info.classnames[0] == "tench"
    assert len(info.templates) == 80 and all(t.count("{}") == 1 for t in info.templates)
    assert df["label"].tolist() == [0, 999] and info.counts["empty_classes"] == 998
