"""Manifest format tests on data written here: round trip, validation messages, dataset_texts, limit and splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from structure_align.data import (
    DatasetInfo,
    ManifestError,
    assert_split_disjoint,
    build_manifest,
    connected_groups,
    dataset_texts,
    grouped_split,
    manifest_sha256,
    read_manifest,
    register_dataset,
    split_pairs,
    stratified_subset,
    write_manifest,
)


def pairs_df() -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": ["a", "b", "c"],
        "image_path": ["img/a.png", "img/b.png", "img/c.png"],
        "captions": [["cap a"], ["cap b1", "cap b2"], ["cap c"]],
        "label": [-1, -1, -1],
        "split": ["train", "train", "test"],
        "source": ["src"] * 3,
        "version": ["1.0"] * 3,
    })


def zeroshot_df() -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ["x", "y"], "image_path": ["x.png", "y.png"], "captions": [[], []],
                         "label": [1, 0], "split": ["test", "test"], "source": ["s", "s"], "version": ["", ""]})


ZS_INFO = DatasetInfo(name="zs", task="zeroshot", classnames=["cat", "dog"], templates=["a {}.", "a photo of a {}."])


def test_round_trip_and_sha(tmp_path):
    info = DatasetInfo(name="toy", task="pairs", source="src", version="1.0", counts={"skipped": 2})
    out = write_manifest(pairs_df(), info, tmp_path / "toy.parquet")
    assert (tmp_path / "toy.json").is_file()
    assert out.manifest_sha256 == manifest_sha256(tmp_path / "toy.parquet")
    assert json.loads((tmp_path / "toy.json").read_text())["manifest_sha256"] == out.manifest_sha256
    df, info2 = read_manifest(tmp_path / "toy")
    assert info2 == out and info2.counts == {"skipped": 2}
    assert list(df.columns) == ["sample_id", "image_path", "captions", "label", "split", "source", "version"]
    assert df["captions"].tolist() == [["cap a"], ["cap b1", "cap b2"], ["cap c"]]
    assert df["label"].dtype == np.int64
    # same content -> same bytes (the sha does not depend on when or with which pandas it was written)
    again = write_manifest(df, info, tmp_path / "again.parquet")
    assert again.manifest_sha256 == out.manifest_sha256
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_stale_pair_detected(tmp_path):
    write_manifest(pairs_df(), DatasetInfo(name="toy", task="pairs"), tmp_path / "toy.parquet")
    other = pairs_df().assign(version="2.0")
    write_manifest(other, DatasetInfo(name="toy", task="pairs"), tmp_path / "other.parquet")
    (tmp_path / "other.parquet").replace(tmp_path / "toy.parquet")
    with pytest.raises(ManifestError, match=r"toy\.json.*manifest_sha256"):
        read_manifest(tmp_path / "toy.parquet")


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.drop(columns=["split"]), r"missing \['split'\]"),
    (lambda d: d.assign(extra=1), r"unexpected \['extra'\]"),
    (lambda d: d.assign(sample_id=["a", "a", "c"]), "'sample_id' must be unique"),
    (lambda d: d.assign(split=["train", "val", "test"]), r"'split' holds \['val'\]"),
    (lambda d: d.assign(label=[-1, 0, -1]), "'label' row 1 = 0 is out of range"),
    (lambda d: d.assign(label=[-1.0, -1.0, -1.0]), "'label' must be int64"),
    (lambda d: d.assign(captions=["cap", ["x"], ["y"]]), "'captions' row 0 is str"),
    (lambda d: d.assign(captions=[["a"], [], ["c"]]), "'captions' row 1 is empty"),
    (lambda d: d.assign(image_path=["a", "", "c"]), "'image_path' is empty in row 1"),
    (lambda d: d.assign(source=["s", 3, "s"]), "'source' must hold str"),
])
def test_validation_errors_name_file_and_column(tmp_path, mutate, match):
    path = tmp_path / "bad.parquet"
    with pytest.raises(ManifestError, match=match) as exc:
        write_manifest(mutate(pairs_df()), DatasetInfo(name="bad", task="pairs"), path)
    assert str(path) in str(exc.value)
    assert not path.exists()


@pytest.mark.parametrize("info, match", [
    (DatasetInfo(name="zs", task="zeroshot", classnames=["cat", "dog"]), "needs classnames and templates"),
    (DatasetInfo(name="zs", task="zeroshot", classnames=["cat", "dog"], templates=["{} {}"]), "exactly one"),
    (DatasetInfo(name="zs", task="zeroshot", classnames=["cat", "cat"], templates=["{}"]), "duplicates"),
    (DatasetInfo(name="zs", task="zeroshot", classnames=["cat"], templates=["{}"]), "'label' row 0 = 1"),
    (DatasetInfo(name="zs", task="classify", classnames=["cat", "dog"], templates=["{}"]), "task"),
])
def test_info_validation(tmp_path, info, match):
    with pytest.raises(ManifestError, match=match):
        write_manifest(zeroshot_df(), info, tmp_path / "zs.parquet")


def test_zeroshot_rejects_unlabelled_rows(tmp_path):
    with pytest.raises(ManifestError, match="'label' row 0 = -1"):
        write_manifest(zeroshot_df().assign(label=[-1, 0]), ZS_INFO, tmp_path / "zs.parquet")


def test_read_manifest_corrupt_json(tmp_path):
    write_manifest(pairs_df(), DatasetInfo(name="toy", task="pairs"), tmp_path / "toy.parquet")
    (tmp_path / "toy.json").write_text('{"name": "toy", "task": "pairs", "colour": 1}')
    with pytest.raises(ManifestError, match=r"toy\.json.*unknown DatasetInfo keys \['colour'\]"):
        read_manifest(tmp_path / "toy.parquet")
    (tmp_path / "toy.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "toy.parquet")


def test_dataset_texts_pairs_order_and_groups(tmp_path):
    write_manifest(pairs_df(), DatasetInfo(name="toy", task="pairs"), tmp_path / "toy.parquet")
    df, info = read_manifest(tmp_path / "toy.parquet")
    texts, groups = dataset_texts(df, info)
    assert texts == ["cap a", "cap b1", "cap b2", "cap c"]
    assert groups.dtype == np.int64 and groups.tolist() == [0, 1, 1, 2]


def test_dataset_texts_zeroshot_class_major(tmp_path):
    write_manifest(zeroshot_df(), ZS_INFO, tmp_path / "zs.parquet")
    df, info = read_manifest(tmp_path / "zs.parquet")
    texts, groups = dataset_texts(df, info)
    assert texts == ["a cat.", "a photo of a cat.", "a dog.", "a photo of a dog."]
    assert groups.tolist() == [0, 0, 1, 1]


# ------------------------------------------------------------------------------------------------ limit and splits

def test_stratified_subset_keeps_proportions_and_is_seeded():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_subset(labels, 20, seed=3)
    assert len(idx) == 20 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [12, 6, 2]
    assert np.array_equal(idx, stratified_subset(labels, 20, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 20, seed=4))
    assert np.array_equal(stratified_subset(labels, None, seed=0), np.arange(100))
    assert np.array_equal(stratified_subset(labels, 1000, seed=0), np.arange(100))


def test_stratified_subset_remainders():
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5)
    idx = stratified_subset(labels, 4, seed=0)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.sum() == 4 and counts.max() - counts.min() <= 1


def test_connected_groups_links_shared_keys():
    groups = connected_groups([["a"], ["b"], ["a", "c"], ["c"], ["d"]])
    assert groups[0] == groups[2] == groups[3]
    assert len({groups[0], groups[1], groups[4]}) == 3


def test_split_pairs_disjoint_by_caption_and_image():
    captions = [f"cap {i % 70}" for i in range(200)]  # 70 captions shared by ~3 images each
    images = [f"img {i}" for i in range(200)]
    for a, b in ((5, 6), (7, 150), (9, 100)):  # identical images with different captions link caption groups
        images[b] = images[a]
    split = split_pairs(captions, images, 0.2, seed=1)
    df = pd.DataFrame({"sample_id": [str(i) for i in range(200)], "image_path": [f"{i}.png" for i in range(200)],
                       "captions": [[c] for c in captions], "split": split})
    assert_split_disjoint(df, image_keys=images)
    n_test = int((split == "test").sum())
    assert 30 <= n_test <= 50
    assert np.array_equal(split, split_pairs(captions, images, 0.2, seed=1))
    assert not np.array_equal(split, split_pairs(captions, images, 0.2, seed=2))


def test_grouped_split_fraction_without_shared_keys():
    split = grouped_split([[i] for i in range(1000)], 0.2, seed=0)
    assert (split == "test").sum() == 200


def test_assert_split_disjoint_catches_shared_caption():
    df = pairs_df().assign(captions=[["same"], ["x"], ["same"]])
    with pytest.raises(ManifestError, match="captions shared by train and test"):
        assert_split_disjoint(df)
    with pytest.raises(ManifestError, match="image content"):
        assert_split_disjoint(pairs_df(), image_keys=["h1", "h2", "h1"])


# ------------------------------------------------------------------------------------------------ build_manifest

def test_build_manifest_runs_builder_and_checks_sources(tmp_path, monkeypatch):
    from structure_align.data import registry

    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    calls = []

    @register_dataset("toy_build", sources="pysiogame", task="zeroshot", options={"size": 2})
    def build(resources_dir, images_dir, *, limit=None, seed=0, size=2):
        calls.append((resources_dir, images_dir, limit, seed, size))
        return zeroshot_df(), DatasetInfo(name="toy_build", task="zeroshot", classnames=["cat", "dog"],
                                          templates=["a {}."])

    res = tmp_path / "resources"
    monkeypatch.chdir(tmp_path)  # the builder's relative image paths x.png, y.png (pre-flight check opens them)
    for name in ("x.png", "y.png"):
        Image.new("RGB", (4, 3), (9, 9, 9)).save(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="pysiogame.*acquire"):
        build_manifest("toy_build", res, tmp_path / "out", tmp_path / "images")
    with pytest.raises(ValueError, match="unknown option"):
        build_manifest("toy_build", res, tmp_path / "out", tmp_path / "images", sizes=3)
    assert calls == []
    (res / "pysiogame").mkdir(parents=True)
    (res / "pysiogame" / "SOURCE.json").write_text("{}")
    path, info = build_manifest("toy_build", res, tmp_path / "out", tmp_path / "images", seed=5)
    assert path == tmp_path / "out" / "toy_build.parquet"
    assert calls == [(res, tmp_path / "images" / "toy_build", None, 5, 2)]
    df, info2 = read_manifest(path)
    assert info2 == info and len(df) == 2
