"""GCompris datasets: QML parsing and manifest building on fixture bundles; (slow) the real Debian bundles."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rcc_writer import FLAG_COMPRESSED, write_rcc

from structure_align.data import build_manifest, dataset_texts, read_manifest
from structure_align.data.gcompris import (
    EXPLORE_ACTIVITIES,
    RCC_SUBDIR,
    SOURCE,
    explore_items,
    js_unescape,
    qml_string_objects,
)
from structure_align.data.rcc import RccArchive

BOARD = '''/* GCompris
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
import QtQuick 2.12

QtObject {
    property string backgroundImage: "qrc:/gcompris/src/activities/%(act)s/resource/map.svg"
    property var tab: [
        {
            "image": "qrc:/gcompris/src/activities/%(act)s/resource/key.svg",
            "title": qsTr("Tower \\"One\\""),
            // a comment with "quotes": and { braces }
            "text": qsTr("It is tall.   It is old." + " It is \\u00e9l\\u00e9gant!"),
            "image2": "qrc:/gcompris/src/activities/%(act)s/resource/photos/one.webp",
            "text2": qsTr("Tower"),
            "x": 0.5,
            "y": "0.25"
        },
        {
            "title": qsTr("Second"),
            "text": qsTr('Single quoted: it\\'s fine.'),
            "image2": "qrc:/gcompris/src/activities/%(act)s/resource/photos/two.webp",
            "audio": GCompris.ApplicationInfo.getAudioFilePath("qrc:/x.$CA")
        },
        {
            "title": qsTr("Again"),
            "text": qsTr("Same photo twice."),
            "image2": "qrc:/gcompris/src/activities/%(act)s/resource/photos/one.webp"
        },
        {
            "title": qsTr("Ghost"),
            "text": qsTr("Missing photo."),
            "image2": "qrc:/gcompris/src/activities/%(act)s/resource/photos/ghost.webp"
        }
    ]
}
'''


def _webp(color: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def _explore_bundle(path: Path, act: str) -> Path:
    base = f"gcompris/src/activities/{act}"
    files = {
        f"{base}/ActivityInfo.qml": (b'ActivityInfo { title: qsTr("x") }', FLAG_COMPRESSED),
        f"{base}/resource/board/board1.qml": ((BOARD % {"act": act}).encode(), FLAG_COMPRESSED),
        f"{base}/resource/photos/one.webp": _webp((200, 10, 10)),
        f"{base}/resource/photos/two.webp": _webp((10, 200, 10)),
        f"{base}/resource/key.svg": b"<svg/>",
    }
    return write_rcc(path, files)


def _categorization_bundle(path: Path) -> Path:
    base = "gcompris/src/activities/categorization/resource/images"
    files: dict[str, bytes | tuple[bytes, int]] = {
        "gcompris/src/activities/categorization/resource/board/category_fishes.qml": (b"QtObject {}", FLAG_COMPRESSED),
        f"{base}/fishes/README": b"License: CC0",
    }
    for folder, n in (("fishes", 3), ("monuments", 2), ("renewable", 2), ("tools", 4), ("others", 3),
                      ("numbers", 1)):
        for k in range(n):
            files[f"{base}/{folder}/{folder}{k}.webp"] = _webp((20 * k, 40, 60))
    files[f"{base}/tools/drawing.svg"] = b"<svg/>"
    return write_rcc(path, files)


@pytest.fixture()
def resources(tmp_path: Path) -> Path:
    root = tmp_path / "resources"
    rcc = root / SOURCE / RCC_SUBDIR
    rcc.mkdir(parents=True)
    (root / SOURCE / "SOURCE.json").write_text(json.dumps({"source": SOURCE}))
    for act in EXPLORE_ACTIVITIES:
        _explore_bundle(rcc / f"{act}.rcc", act)
    _categorization_bundle(rcc / "categorization.rcc")
    return root


def test_js_unescape() -> None:
    assert js_unescape(r"a\"b\'c\\d\n\u00e9\x41") == "a\"b'c\\d\n\u00e9A"


def test_qml_string_objects_reads_board_entries() -> None:
    objs = qml_string_objects(BOARD % {"act": "explore_x"})
    entries = [o for o in objs if "image2" in o]
    assert [o["title"] for o in entries] == ['Tower "One"', "Second", "Again", "Ghost"]
    assert entries[0]["text"] == "It is tall.   It is old. It is \u00e9l\u00e9gant!"
    assert entries[0]["y"] == "0.25" and "x" not in entries[0]  # non-string values are skipped
    assert entries[1]["text"] == "Single quoted: it's fine."
    assert "audio" not in entries[1]  # a function call is not a string literal
    root = [o for o in objs if "backgroundImage" in o]
    assert root and root[0]["backgroundImage"].endswith("map.svg")


def test_explore_items_dedupes_and_skips_missing(tmp_path: Path) -> None:
    archive = RccArchive(_explore_bundle(tmp_path / "e.rcc", "explore_x"))
    items, counts = explore_items(archive, "explore_x")
    assert [i.title for i in items] == ['Tower "One"', "Second"]
    assert items[0].description == "It is tall. It is old. It is \u00e9l\u00e9gant!"  # whitespace collapsed
    assert items[0].sample_id == "explore_x/photos/one"
    assert counts == {"entries": 4, "duplicate_images": 1, "missing_images": 1, "untitled": 0}
    with pytest.raises(ValueError, match="no board files"):
        explore_items(archive, "explore_other")


@pytest.mark.parametrize("name,with_desc", [("gcompris_explore_title", False), ("gcompris_explore_desc", True)])
def test_explore_manifest(resources: Path, tmp_path: Path, name: str, with_desc: bool) -> None:
    parquet, info = build_manifest(name, resources, tmp_path / "manifests", tmp_path / "images")
    df, info2 = read_manifest(parquet)
    assert info2 == info and info.task == "retrieval"
    assert len(df) == 2 * len(EXPLORE_ACTIVITIES)
    assert set(df["split"]) == {"test"} and set(df["label"]) == {-1}
    assert df["sample_id"].is_unique
    first = df[df["sample_id"] == "explore_monuments/photos/one"].iloc[0]
    expected = 'Tower "One" It is tall. It is old. It is \u00e9l\u00e9gant!' if with_desc else 'Tower "One"'
    assert list(first["captions"]) == [expected]
    img = Image.open(first["image_path"])
    assert img.size == (12, 8) and img.convert("RGB").getpixel((0, 0)) == (200, 10, 10)
    texts, groups = dataset_texts(df, info)
    assert len(texts) == len(df) and np.array_equal(groups, np.arange(len(df)))
    assert info.counts["duplicate_images"] == len(EXPLORE_ACTIVITIES)


def test_categorization_manifest(resources: Path, tmp_path: Path) -> None:
    parquet, info = build_manifest("gcompris_categorization", resources, tmp_path / "m", tmp_path / "img")
    df, _ = read_manifest(parquet)
    assert info.task == "zeroshot"
    assert info.classnames == ["a fish", "a monument", "renewable energy", "a tool"]
    assert all(t.count("{}") == 1 for t in info.templates) and info.templates
    assert np.bincount(df["label"], minlength=4).tolist() == [3, 2, 2, 4]
    assert info.counts["skipped_others"] == 3 and info.counts["skipped_numbers"] == 1
    assert info.counts["photos_in_bundle"] == 15
    assert not any(s.startswith("others/") for s in df["sample_id"])
    row = df[df["sample_id"] == "tools/tools3"].iloc[0]
    assert Image.open(row["image_path"]).convert("RGB").getpixel((0, 0)) == (60, 40, 60)
    texts, groups = dataset_texts(df, info)
    assert texts[0] == info.templates[0].format("a fish") and groups.tolist()[-1] == 3


def test_categorization_limit_is_seeded_and_stratified(resources: Path, tmp_path: Path) -> None:
    a, _ = build_manifest("gcompris_categorization", resources, tmp_path / "a", tmp_path / "ia", limit=6, seed=3)
    b, _ = build_manifest("gcompris_categorization", resources, tmp_path / "b", tmp_path / "ib", limit=6, seed=3)
    da, db = read_manifest(a)[0], read_manifest(b)[0]
    assert len(da) == 6 and da["sample_id"].tolist() == db["sample_id"].tolist()
    assert set(da["label"]) == {0, 1, 2, 3}


def test_missing_bundle_is_named(resources: Path, tmp_path: Path) -> None:
    (resources / SOURCE / RCC_SUBDIR / "explore_world_music.rcc").unlink()
    with pytest.raises(FileNotFoundError, match="explore_world_music.rcc"):
        build_manifest("gcompris_explore_title", resources, tmp_path / "m", tmp_path / "i")


# -- the real Debian package ----------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_resources() -> Path:
    from acquire_util import acquire_or_skip

    resources = REPO / "resources"
    acquire_or_skip(SOURCE, resources)
    return resources


@pytest.mark.slow
def test_real_categorization(real_resources: Path, tmp_path: Path) -> None:
    parquet, info = build_manifest("gcompris_categorization", real_resources, tmp_path / "m", tmp_path / "i")
    df, _ = read_manifest(parquet)
    assert info.counts["photos_in_bundle"] == 142
    assert np.bincount(df["label"], minlength=4).tolist() == [28, 27, 29, 39]
    assert info.counts["skipped_others"] == 17
    assert len(df) == 123
    img = Image.open(df["image_path"].iloc[0])
    img.load()
    assert img.format == "WEBP"


@pytest.mark.slow
def test_real_explore(real_resources: Path, tmp_path: Path) -> None:
    parquet, info = build_manifest("gcompris_explore_desc", real_resources, tmp_path / "m", tmp_path / "i")
    df, _ = read_manifest(parquet)
    assert len(df) == 82
    assert {a: info.counts[f"{a}_images"] for a in EXPLORE_ACTIVITIES} == {
        "explore_monuments": 49, "explore_world_animals": 15, "explore_world_music": 9, "explore_farm_animals": 9}
    assert info.counts["missing_images"] == 0 and info.counts["duplicate_images"] == 0
    row = df[df["sample_id"] == "explore_monuments/wonders/colosseum"].iloc[0]
    assert row["captions"][0].startswith("Colosseum The Colosseum or Coliseum")
    assert (info.counts["description_sentences_min"], info.counts["description_sentences_max"]) == (1, 7)
