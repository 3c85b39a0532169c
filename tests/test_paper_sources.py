"""Every paper url source from its published archive format (served on loopback) to a manifest; local sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from http_fixture import FileServer
from paper_fixtures import write_local, write_published

from structure_align.data import acquire, build_manifest, read_manifest
from structure_align.data.imagenet import disambiguate_classnames
from structure_align.data.prompts import released_classnames


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    www = tmp_path_factory.mktemp("www")
    res = tmp_path_factory.mktemp("resources")
    overrides = write_published(www)
    with FileServer(www) as server:
        for source in overrides:
            acquire(source, res, mirror=server.url, downloads={"overrides": overrides}, progress=False)
    write_local(res)
    for source in ("imagenet", "flickr30k"):
        acquire(source, res)
    return res


@pytest.mark.parametrize(("name", "options", "rows", "classes"), [
    ("coco", {}, 66, 0), ("cifar10", {}, 20, 4), ("cifar100", {}, 20, 5), ("stl10", {}, 12, 3),
    ("caltech101", {"train_per_class": 2}, 102, 102), ("food101", {}, 15, 3), ("pets", {}, 9, 3),
    ("imagenet", {}, 12, 3), ("flickr30k", {"annotations": "karpathy", "splits": ["test"]}, 8, 0)])
def test_manifest_from_published_format(resources: Path, tmp_path: Path, name: str, options: dict, rows: int,
                                        classes: int) -> None:
    parquet, info = build_manifest(name, resources, tmp_path / "m", tmp_path / "img", **options)
    df, _ = read_manifest(parquet)
    assert len(df) == rows and len(info.classnames) == classes
    if classes:
        assert df["label"].nunique() == classes and all(Path(p).is_file() for p in df["image_path"])


def test_class_names_follow_the_published_conventions(resources: Path, tmp_path: Path) -> None:
    _, pets = build_manifest("pets", resources, tmp_path / "m", tmp_path / "img")
    assert pets.classnames == ["Abyssinian", "american bulldog", "Bengal"]  # the released folder-name convention
    _, food = build_manifest("food101", resources, tmp_path / "m", tmp_path / "img")
    assert food.classnames == ["apple pie", "baby back ribs", "sushi"]
    parquet, cal = build_manifest("caltech101", resources, tmp_path / "m", tmp_path / "img", train_per_class=2,
                                  background=False)
    assert cal.classnames[:2] == ["off-center face", "centered face"] and len(cal.classnames) == 101
    assert set(read_manifest(parquet)[0]["split"]) == {"test"}


def test_caltech_without_test_images_is_a_clear_error(resources: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'test' images"):
        build_manifest("caltech101", resources, tmp_path / "m", tmp_path / "img")


def test_imagenet_duplicate_names_are_disambiguated() -> None:
    names = released_classnames("imagenet")
    fixed, renamed = disambiguate_classnames(names)
    assert len(set(fixed)) == 1000 and renamed == {744: "projectile", 836: "sunglass"}
    assert fixed[657] == "missile" and fixed[837] == "sunglasses"
    assert disambiguate_classnames(["a", "b", "a"]) == (["a", "b", "a (2)"], {2: "a (2)"})
