"""The paper profile's zero-shot class names, templates and Caltech101 split against the released code
(issue 21 items 1-3; docs/method.md §11): the expected values are the tests' own copy of the released
``src/evaluation/consts.py`` lists (tests/data/released_consts.json), and the Caltech101 draw is recomputed with
torchvision's ImageFolder and the released sampling loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from paper_fixtures import COLOURS, jpeg

from structure_align.data import DATASETS
from structure_align.data import prompts as P
from structure_align.data.caltech101 import caltech_split
from structure_align.data.pets import build_pets

EXPECTED = json.loads((Path(__file__).parent / "data" / "released_consts.json").read_text(encoding="utf-8"))
# the official class-id order of Oxford-IIIT Pet (annotations/list.txt: image-name prefixes, case-insensitive sort)
PET_BREEDS = ["Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal",
              "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel",
              "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
              "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug",
              "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "Siamese",
              "Sphynx", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier"]


@pytest.mark.parametrize("dataset", sorted(P.RELEASED_KEYS))
def test_package_lists_equal_the_released_ones(dataset: str) -> None:
    key = P.RELEASED_KEYS[dataset]
    names = P.released_classnames(dataset)
    assert len(names) == len(EXPECTED["classnames"][key])
    assert names == EXPECTED["classnames"][key]  # order by class and exact strings
    assert P.released_templates(dataset) == EXPECTED["templates"][key]


def test_spot_checks_of_the_released_conventions() -> None:
    assert len(EXPECTED["classnames"]["pets"]) == 37 and EXPECTED["classnames"]["pets"][20] == "german shorthaired"
    assert [len(EXPECTED["templates"][k]) for k in ("stl10", "cifar10", "caltech101", "imagenet")] == [2, 18, 34, 80]
    assert EXPECTED["classnames"]["caltech101"][0] == "background"
    assert EXPECTED["classnames"]["mnist"][:2] == ["doughnut", "linear"]


def test_every_paper_zeroshot_builder_defaults_to_the_released_lists() -> None:
    for dataset in P.RELEASED_KEYS:
        assert DATASETS[dataset].options["prompts"] == "released", dataset


def _pets_tree(root: Path, breeds: list[str]) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    lines = []
    for i, breed in enumerate(breeds):
        (root / "images" / f"{breed}_1.jpg").write_bytes(jpeg(COLOURS[i % 6], i))
        lines.append(f"{breed}_1 {i + 1} {1 if breed[0].isupper() else 2} {i + 1}")
    (root / "annotations" / "test.txt").write_text("\n".join(lines) + "\n")


def test_pets_names_are_the_released_folder_names(tmp_path: Path) -> None:
    _pets_tree(tmp_path / "pets", PET_BREEDS)
    _, info = build_pets(tmp_path / "pets")
    assert len(info.classnames) == 37
    # the released list is its ImageFolder order (ASCII-sorted folders); ours is by official class id
    assert sorted(info.classnames) == EXPECTED["classnames"]["pets"]
    assert info.classnames[:3] == ["Abyssinian", "american bulldog", "american pit bull terrier"]
    assert info.classnames[9] == "British Shorthair" and info.classnames[14] == "german shorthaired"
    assert info.counts["prompts_source"].startswith(f"released_zeroshot.json sha256:{P.package_sha256()[:16]}")
    _, title = build_pets(tmp_path / "pets", prompts="fallback")  # torchvision's title case, only when asked
    assert title.classnames[1] == "American Bulldog" and title.templates == ["a photo of a {}."]


def test_a_class_without_a_released_name_is_refused(tmp_path: Path) -> None:
    _pets_tree(tmp_path / "pets", ["Abyssinian", "american_Bulldog"])
    with pytest.raises(ValueError, match=r"pets: class\(es\) \['american_Bulldog'\] .* have no released name"):
        build_pets(tmp_path / "pets")


def test_manifest_rule_token_tracks_the_package_data_of_paper_sets_only() -> None:
    assert P.rule_token("pets") == f"released_zeroshot.json@{P.package_sha256()}"
    assert P.rule_token("fashion_mnist") == "" and P.rule_token("tuxpaint") == ""


# -- Caltech101: the released draw -----------------------------------------------------------------------------------

def _caltech_tree(root: Path, sizes: dict[str, int]) -> Path:
    tree = root / "caltech101" / "caltech-101" / "101_ObjectCategories"
    for i, (folder, n) in enumerate(sizes.items()):
        (tree / folder).mkdir(parents=True)
        for k in np.random.default_rng(i).permutation(n):  # created out of order: the builder must sort
            (tree / folder / f"image_{k + 1:04d}.jpg").write_bytes(jpeg(COLOURS[i % 6], 10 * i + int(k), (8, 8)))
    return tree


def test_caltech_split_is_the_released_draw(tmp_path: Path) -> None:
    """The released loop, verbatim in behaviour: ImageFolder targets, np.random.seed(42) before every class."""
    datasets = pytest.importorskip("torchvision.datasets")
    sizes = {"BACKGROUND_Google": 34, "Faces": 41, "Faces_easy": 33, "accordion": 55, "airplanes": 31}
    tree = _caltech_tree(tmp_path, sizes)
    folder = datasets.ImageFolder(str(tree))
    targets = np.array(folder.targets)
    expected_train = []
    for t in np.unique(targets):
        np.random.seed(42)
        expected_train.extend(np.random.choice(np.where(targets == t)[0], size=30, replace=False))
    expected = {Path(folder.samples[i][0]).relative_to(tree).as_posix() for i in expected_train}
    split = caltech_split(targets, 30, 42)
    assert {Path(folder.samples[i][0]).relative_to(tree).as_posix() for i in np.flatnonzero(split == "train")} \
        == expected
    # the builder (its own file ordering) selects the same images; the rest is the evaluation set
    df, _ = DATASETS["caltech101"].build(tmp_path, tmp_path, split="train", prompts="fallback")
    assert set(df["sample_id"]) == expected and len(df) == 30 * len(sizes)
    test, _ = DATASETS["caltech101"].build(tmp_path, tmp_path, split="test", prompts="fallback")
    assert len(test) == sum(sizes.values()) - 30 * len(sizes) and not set(test["sample_id"]) & expected


def test_caltech_needs_the_full_folder_list_for_the_released_names(tmp_path: Path) -> None:
    _caltech_tree(tmp_path, {"BACKGROUND_Google": 2, "Faces": 2})
    with pytest.raises(ValueError, match=r"caltech101: .* has 2 class folders, the released list names 102"):
        DATASETS["caltech101"].build(tmp_path, tmp_path, train_per_class=1)


# -- hand-placed sets that are missing (issue 21 item 5) -------------------------------------------------------------

def _paper_lists() -> dict:
    return {"train": ["coco"], "retrieval": ["flickr30k", "coco"], "zeroshot": ["stl10", "imagenet", "pets"],
            "all": ["coco", "flickr30k", "stl10", "imagenet", "pets"]}


def test_skip_missing_local_leaves_out_unplaced_sets_only(tmp_path: Path) -> None:
    from structure_align.data import placed

    (tmp_path / "imagenet" / "val").mkdir(parents=True)  # ImageNet placed, Flickr30k's images folder missing
    (tmp_path / "flickr30k").mkdir()
    config = {"datasets": _paper_lists(), "paper": {"missing_local": "skip"}}
    skipped = placed.skip_missing_local(config, DATASETS, tmp_path)
    assert list(skipped) == ["flickr30k"] and skipped["flickr30k"].endswith("(missing: flickr30k_images)")
    assert skipped["flickr30k"].startswith("place ") and f"at {tmp_path / 'flickr30k'}/" in skipped["flickr30k"]
    assert config["datasets"]["retrieval"] == ["coco"] and "flickr30k" not in config["datasets"]["all"]
    assert config["datasets"]["zeroshot"] == ["stl10", "imagenet", "pets"]  # url sources are never left out
    unchanged = {"datasets": _paper_lists()}  # default fail: the plan keeps them (their acquisition reports)
    assert placed.skip_missing_local(unchanged, DATASETS, tmp_path) == {} and unchanged["datasets"] == _paper_lists()


def test_column_notes_mark_skipped_sets_and_other_prompts() -> None:
    from structure_align.data import placed

    config = {"datasets": _paper_lists(), "manifest": {"stl10": {"prompts": "simple"}, "pets": {"split": "test"}}}
    notes = placed.column_notes(config, {"imagenet": "place X at resources/imagenet/"})
    assert notes == {"imagenet": "not run: place X at resources/imagenet/",
                     "stl10": "prompts: simple (the single template 'a photo of a {}'), not the released lists"}
