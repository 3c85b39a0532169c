"""The extra zero-shot sets of the released config (MNIST, DTD, Flowers102, Country211): each from a tiny fixture
in its published archive format, served on loopback and acquired like the real download, to a manifest."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from http_fixture import FileServer
from paper_fixtures import COLOURS, _tgz, jpeg

from structure_align.data import DATASETS, acquire, build_manifest, get_source, read_manifest
from structure_align.data.mnist import IDX_IMAGES, read_idx


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _mnist() -> dict[str, bytes]:
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1], dtype=np.uint8)
    images = np.stack([np.full((28, 28), 20 * int(label), dtype=np.uint8) for label in labels])
    return {"t10k-images-idx3-ubyte.gz": _idx(images, 2051), "t10k-labels-idx1-ubyte.gz": _idx(labels, 2049)}


def _dtd() -> dict[str, bytes]:
    classes = ["banded", "blotchy", "zigzagged"]
    files = {f"dtd/images/{c}/{c}_{k:04d}.jpg": jpeg(COLOURS[i], 10 * i + k) for i, c in enumerate(classes)
             for k in range(4)}
    files["dtd/labels/test1.txt"] = "".join(f"{c}/{c}_{k:04d}.jpg\n" for c in classes for k in (0, 1)).encode()
    files["dtd/labels/train1.txt"] = "".join(f"{c}/{c}_{k:04d}.jpg\n" for c in classes for k in (2, 3)).encode()
    return {"dtd-r1.0.1.tar.gz": _tgz(files)}


def _mat(tmp: Path, **arrays: np.ndarray) -> bytes:
    from scipy.io import savemat

    path = tmp / "x.mat"
    savemat(path, arrays)
    return path.read_bytes()


def _flowers(tmp: Path) -> dict[str, bytes]:
    labels = np.array([1, 1, 2, 2, 3, 3, 102, 102])  # image ids 1..8
    images = {f"jpg/image_{k + 1:05d}.jpg": jpeg(COLOURS[k % 6], 40 + k) for k in range(len(labels))}
    return {"102flowers.tgz": _tgz(images), "imagelabels.mat": _mat(tmp, labels=labels[None, :]),
            "setid.mat": _mat(tmp, trnid=np.array([[1, 3]]), valid=np.array([[5]]),
                              tstid=np.array([[2, 4, 6, 7, 8]]))}


def _country211() -> dict[str, bytes]:
    files = {f"country211/{split}/{code}/{k}.jpg": jpeg(COLOURS[i], 60 + 10 * i + k)
             for split in ("train", "test") for i, code in enumerate(["AD", "AE", "ZW"]) for k in range(3)}
    return {"country211.tgz": _tgz(files)}


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    www = tmp_path_factory.mktemp("www")
    res = tmp_path_factory.mktemp("resources")
    published = {"mnist": _mnist(), "dtd": _dtd(), "flowers102": _flowers(tmp_path_factory.mktemp("mat")),
                 "country211": _country211()}
    overrides: dict[str, dict[str, dict]] = {}
    for source, files in published.items():
        assert sorted(files) == sorted(d.file for d in get_source(source).downloads)  # the published file names
        (www / source).mkdir()
        for name, data in files.items():
            (www / source / name).write_bytes(data)
            overrides.setdefault(source, {})[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    with FileServer(www) as server:
        for source in published:
            acquire(source, res, mirror=server.url, downloads={"overrides": overrides}, progress=False)
    return res


@pytest.mark.parametrize(("name", "options", "rows", "classes"), [
    ("mnist", {}, 12, 10), ("dtd", {}, 6, 3), ("dtd", {"split": "train"}, 6, 3), ("flowers102", {}, 5, 102),
    ("flowers102", {"split": "train"}, 2, 102), ("country211", {"prompts": "fallback"}, 9, 3)])
def test_manifest_from_published_format(resources: Path, tmp_path: Path, name: str, options: dict, rows: int,
                                        classes: int) -> None:
    parquet, info = build_manifest(name, resources, tmp_path / "m", tmp_path / "img", **options)
    df, _ = read_manifest(parquet)
    assert info.task == "zeroshot" and len(df) == rows and len(info.classnames) == classes
    assert all(Path(p).is_file() for p in df["image_path"])
    assert set(df["split"]) == {"train" if options.get("split") == "train" else "test"}


def test_labels_and_names_follow_the_files(resources: Path, tmp_path: Path) -> None:
    from PIL import Image

    df, _ = read_manifest(build_manifest("mnist", resources, tmp_path / "m", tmp_path / "img")[0])
    assert sorted(df["label"]) == [0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]

    with Image.open(df["image_path"][df["label"] == 3].iloc[0]) as im:
        assert im.size == (28, 28) and im.mode == "RGB" and im.getpixel((5, 5)) == (60, 60, 60)
    df, _ = read_manifest(build_manifest("flowers102", resources, tmp_path / "m", tmp_path / "img")[0])
    assert dict(zip(df["sample_id"], df["label"])) == {"image_00002": 0, "image_00004": 1, "image_00006": 2,
                                                        "image_00007": 101, "image_00008": 101}
    _, dtd = build_manifest("dtd", resources, tmp_path / "m", tmp_path / "img")
    assert dtd.classnames == ["banded", "blotchy", "zigzagged"] and len(dtd.templates) == 8
    _, mnist = build_manifest("mnist", resources, tmp_path / "m", tmp_path / "img")
    assert mnist.classnames[:3] == ["doughnut", "linear", "2"] and mnist.templates == ["{}"]  # as released
    # 3 of the 211 country folders: the released names cannot be matched to them, so the default refuses
    with pytest.raises(ValueError, match=r"country211: .* has 3 class folders, the released list names 211"):
        build_manifest("country211", resources, tmp_path / "m", tmp_path / "img")
    _, country = build_manifest("country211", resources, tmp_path / "m", tmp_path / "img", prompts="fallback")
    assert country.classnames == ["AD", "AE", "ZW"] and country.templates == ["a photo of a {}."]
    assert country.counts["prompts"] == "fallback" and country.counts["classnames_source"] == "files"


def test_errors_name_the_file(resources: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match=r"bad\.gz: not an idx file with magic 2051"):
        read_idx(bad, IDX_IMAGES)
    with pytest.raises(ValueError, match="partition=11"):
        DATASETS["dtd"].build(resources, tmp_path, **DATASETS["dtd"].resolve_options({"partition": 11}))
    with pytest.raises(FileNotFoundError, match=r"dtd/labels/val1\.txt"):
        DATASETS["dtd"].build(resources, tmp_path, **DATASETS["dtd"].resolve_options({"split": "val"}))
    with pytest.raises(FileNotFoundError, match=r"country211/valid"):
        DATASETS["country211"].build(resources, tmp_path, **DATASETS["country211"].resolve_options({"split": "valid"}))
