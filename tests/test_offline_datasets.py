"""Offline dataset builders: fast tests on miniature source trees written here, slow tests on the real packages."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from acquire_util import acquire_or_skip
from PIL import Image

from structure_align.data import (
    AcquireError,
    assert_split_disjoint,
    build_manifest,
    composite_on_white,
    dataset_texts,
    get_dataset,
    read_manifest,
)
from structure_align.data.art4apps import clean_classname
from structure_align.data.emoji import emoji_caption
from structure_align.data.fashion_mnist import CLASSNAMES, read_idx
from structure_align.data.tuxpaint import expand_internal_entities, parse_caption, render_svg

REPO = Path(__file__).resolve().parents[1]


def _mark_acquired(res: Path, source: str) -> Path:
    root = res / source
    root.mkdir(parents=True, exist_ok=True)
    (root / "SOURCE.json").write_text("{}")
    return root


def _rgba(path: Path, color: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    for x in range(size // 4, 3 * size // 4):
        for y in range(size // 4, 3 * size // 4):
            im.putpixel((x, y), (*color, 255))
    im.save(path)


# ------------------------------------------------------------------------------------------------ small pieces

def test_parse_caption_uses_english_first_line():
    assert parse_caption("A blackbird.\nach.utf8=Winyo macol.\naf.utf8='n Blackbird.\n") == "A blackbird."
    assert parse_caption("\nde.utf8=Ein Apfel.\nAn apple.\n") == "An apple."
    assert parse_caption("A calculator.  6x7=42\n") == "A calculator. 6x7=42"
    assert parse_caption("fr.utf8=Une pomme.\n") is None


def test_composite_on_white():
    im = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (10, 20, 30, 255))
    out = composite_on_white(im)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (10, 20, 30)


SVG_WITH_ENTITIES = b"""<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd' [
  <!ENTITY ns_svg "http://www.w3.org/2000/svg">
]>
<svg xmlns="&ns_svg;" width="40" height="20" viewBox="0 0 40 20"><rect width="20" height="20" fill="#ff0000"/></svg>
"""


def test_svg_with_internal_entities_renders(tmp_path):
    pytest.importorskip("cairosvg")
    assert b"<!ENTITY" not in expand_internal_entities(SVG_WITH_ENTITIES)
    path = tmp_path / "s.svg"
    path.write_bytes(SVG_WITH_ENTITIES)
    im = render_svg(path, 64)
    assert im.size == (64, 32)
    rgb = composite_on_white(im)
    assert rgb.getpixel((5, 16)) == (255, 0, 0) and rgb.getpixel((60, 16)) == (255, 255, 255)


def test_read_idx_gzip_and_errors(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 3, 4) + data.tobytes())
    assert np.array_equal(read_idx(path), data)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="header says"):
        read_idx(bad)


def test_names():
    assert clean_classname("fruit_n_veg") == "fruit and vegetables"
    assert clean_classname("clothes_n_accessories") == "clothes and accessories"
    assert clean_classname("jobs") == "jobs"
    assert emoji_caption("DOG  FACE") == "an emoji of a dog face"
    assert CLASSNAMES[0] == "t-shirt" and CLASSNAMES[-1] == "ankle boot" and len(CLASSNAMES) == 10


# ------------------------------------------------------------------------------------------------ builders on fakes

def test_tuxpaint_builder_on_fake_tree(tmp_path):
    pytest.importorskip("cairosvg")
    res = tmp_path / "res"
    stamps = _mark_acquired(res, "tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps"
    for i in range(10):  # PNG stamps, two pairs share a caption
        _rgba(stamps / "animals" / f"a{i}.png", (i * 20, 0, 0))
        (stamps / "animals" / f"a{i}.txt").write_text(f"A thing {i % 8}.\nde.utf8=Ding {i}.\n")
    (stamps / "food").mkdir()
    (stamps / "food" / "both.svg").write_bytes(SVG_WITH_ENTITIES)
    _rgba(stamps / "food" / "both.png", (0, 200, 0))
    (stamps / "food" / "both.txt").write_text("Both kinds.\n")
    (stamps / "food" / "vec.svg").write_bytes(SVG_WITH_ENTITIES.replace(b"#ff0000", b"#0000ff"))
    (stamps / "food" / "vec.txt").write_text("A vector.\n")
    (stamps / "food" / "broken.svg").write_text("<svg")
    (stamps / "food" / "broken.txt").write_text("Broken.\n")
    (stamps / "food" / "noimage.txt").write_text("No image.\n")
    _rgba(stamps / "symbols/alphabets/a.png", (0, 0, 0))
    (stamps / "symbols/alphabets/a.txt").write_text("A.\n")

    path, info = build_manifest("tuxpaint", res, tmp_path / "out", tmp_path / "images", test_fraction=0.3, seed=1)
    df, info = read_manifest(path)
    c = info.counts
    assert (c["png"], c["svg"], c["png_and_svg_used_png"], c["no_image"], c["excluded_alphabets"]) == (11, 2, 1, 1, 1)
    assert c["render_failed"] == 1 and c["rows"] == len(df) == 12
    assert "symbols/alphabets/a" not in set(df["sample_id"])
    row = df.set_index("sample_id").loc["food/vec"]
    assert row["captions"] == ["A vector."]
    with Image.open(row["image_path"]) as im:
        assert im.mode == "RGB" and max(im.size) == 256
    with Image.open(df.set_index("sample_id").loc["animals/a3", "image_path"]) as im:
        assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((8, 8)) == (60, 0, 0)
    assert_split_disjoint(df)
    split_of = dict(zip(df["sample_id"], df["split"]))
    assert split_of["animals/a0"] == split_of["animals/a8"] and split_of["animals/a1"] == split_of["animals/a9"]
    assert set(df["split"]) == {"train", "test"}
    texts, groups = dataset_texts(df, info)
    assert len(texts) == 12 and groups.tolist() == list(range(12))
    path2, info2 = build_manifest("tuxpaint", res, tmp_path / "out2", tmp_path / "images2", test_fraction=0.3,
                                  seed=1)
    assert info2.manifest_sha256 != "" and read_manifest(path2)[0]["split"].tolist() == df["split"].tolist()


def test_emoji_builder_on_fake_package(tmp_path):
    res = tmp_path / "res"
    root = _mark_acquired(res, "emoji-datasource-google")
    entries = []
    for i in range(20):
        image = f"1f{0x600 + i:03x}.png"
        _rgba(root / "img/google/64" / image, (i * 10, 100, 0))
        entries.append({"name": "DOG FACE" if i in (3, 4) else f"THING {i}", "unified": f"1F{0x600 + i:03X}",
                        "image": image, "category": "Animals" if i % 2 else "Food", "sort_order": 20 - i,
                        "has_img_google": True})
    entries.append({"name": "NO IMAGE", "unified": "1F000", "image": "x.png", "has_img_google": False})
    (root / "emoji.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        build_manifest("emoji", res, tmp_path / "out", tmp_path / "img", test_fraction=1.5)
    assert not (tmp_path / "img" / "emoji" / "1f600.png").exists()  # rejected before any image was written
    path, info = build_manifest("emoji", res, tmp_path / "out", tmp_path / "img", limit=10, seed=0)
    df, info = read_manifest(path)
    assert len(df) == 10 and info.counts["entries_with_google_image"] == 20
    assert all(c[0].startswith("an emoji of a ") and c[0] == c[0].lower() for c in df["captions"])
    assert df["sample_id"].str.fullmatch(r"1f6[0-9a-f]{2}").all()
    assert_split_disjoint(df)
    full, _ = read_manifest(build_manifest("emoji", res, tmp_path / "o2", tmp_path / "i2")[0])
    dogs = full[full["captions"].map(lambda c: c == ["an emoji of a dog face"])]
    assert len(dogs) == 2 and dogs["split"].nunique() == 1


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_builder_on_fake_idx(tmp_path):
    res = tmp_path / "res"
    root = _mark_acquired(res, "dataset-fashion-mnist") / "usr/share/datasets/fashion-mnist"
    root.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 6)
    images = np.stack([np.full((28, 28), 20 * (i % 10), dtype=np.uint8) for i in range(60)])
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    path, info = build_manifest("fashion_mnist", res, tmp_path / "out", tmp_path / "img", size=20, seed=2)
    df, info = read_manifest(path)
    assert len(df) == 20 and np.bincount(df["label"], minlength=10).tolist() == [2] * 10
    assert info.classnames == list(CLASSNAMES) and (df["split"] == "test").all()
    first = df.iloc[0]
    with Image.open(first["image_path"]) as im:
        assert im.mode == "RGB" and im.size == (28, 28)
        assert im.getpixel((0, 0)) == (images[int(first["sample_id"][-5:])][0, 0],) * 3
    texts, groups = dataset_texts(df, info)
    assert texts[0] == "a photo of a t-shirt." and groups.tolist() == sorted(groups.tolist())
    _, small = build_manifest("fashion_mnist", res, tmp_path / "o2", tmp_path / "i2", size=20, limit=10)
    assert small.counts["rows"] == 10


def test_art4apps_builder_on_fake_tree(tmp_path):
    res = tmp_path / "res"
    root = _mark_acquired(res, "pysiogame") / "usr/share/games/pysiogame/res/images/art4apps"
    for folder, n in (("fruit_n_veg", 4), ("jobs", 2)):
        for i in range(n):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (i, 0, 0)).save(root / folder / f"w{i}.jpg")
    (root / "jobs" / "broken.jpg").write_bytes(b"not a jpeg")
    path, info = build_manifest("art4apps", res, tmp_path / "out", tmp_path / "img")
    df, info = read_manifest(path)
    assert info.classnames == ["fruit and vegetables", "jobs"]
    assert df["label"].tolist() == [0, 0, 0, 0, 1, 1] and info.counts["unreadable"] == 1
    assert df["sample_id"].tolist()[0] == "fruit_n_veg/w0"


# ------------------------------------------------------------------------------------------------ real packages

RESOURCES = Path(os.environ.get("STRUCTURE_RESOURCES", REPO / "resources"))


def _acquire_or_skip(source: str) -> None:
    acquire_or_skip(source, RESOURCES)


@pytest.mark.parametrize("message, outcome", [
    ("sha256 mismatch for x.deb (source 'emoji'): got 00, expected 11", pytest.fail.Exception),
    ("x.tgz (source 'emoji') lacks the expected paths ['a']", pytest.fail.Exception),
    ("apt-get download x=1 failed (exit 100): E: no network; hint", pytest.skip.Exception),
    ("`npm` was not found on PATH; install it", pytest.skip.Exception),
])
def test_a_pin_mismatch_fails_and_a_fetch_failure_skips(monkeypatch, message, outcome):
    import acquire_util

    def broken(source, resources):
        raise AcquireError(message)

    monkeypatch.setattr(acquire_util, "acquire", broken)
    with pytest.raises(outcome, match="integrity check" if outcome is pytest.fail.Exception else "cannot be fetched"):
        acquire_util.acquire_or_skip("emoji", RESOURCES)


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [
    ("tuxpaint", {"rows": 792, "rows_png": 627, "rows_svg": 165, "render_failed": 0}),
    ("emoji", {"rows": 1911}),
    ("fashion_mnist", {"rows": 1000, "idx_rows": 10000}),
    ("art4apps", {"rows": 585, "files": 585}),
])
def test_real_offline_dataset(tmp_path, name, expected):
    spec = get_dataset(name)
    for src in spec.sources:
        _acquire_or_skip(src)
    path, info = build_manifest(name, RESOURCES, tmp_path / "manifests", tmp_path / "images")
    df, info = read_manifest(path)
    assert {k: info.counts[k] for k in expected} == expected
    assert len(df) == expected["rows"]
    for p in df["image_path"].iloc[:: max(1, len(df) // 20)]:
        with Image.open(p) as im:
            im.verify()
    if spec.task == "pairs":
        assert_split_disjoint(df)
        n_test = int((df["split"] == "test").sum())
        assert abs(n_test - 0.2 * len(df)) <= 0.03 * len(df)
        assert all(len(c) == 1 for c in df["captions"])
    if name == "emoji":
        assert "an emoji of a dog face" in {c[0] for c in df["captions"]}
    if name == "tuxpaint":
        assert "A blackbird." in {c[0] for c in df["captions"]}
    if name == "fashion_mnist":
        assert np.bincount(df["label"]).tolist() == [100] * 10
    if name == "art4apps":
        assert info.classnames == ["actions", "animals", "body", "clothes and accessories", "construction", "food",
                                   "fruit and vegetables", "jobs", "nature", "people", "sport", "transport"]
        assert np.bincount(df["label"]).tolist() == [80, 128, 38, 45, 37, 56, 48, 55, 19, 29, 29, 21]
