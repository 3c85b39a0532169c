"""User datasets of the generic kinds (imagefolder, captions): end to end on files written here, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from structure_align.data import (
    DATASETS,
    KINDS,
    DatasetSpec,
    DeclarationError,
    UnknownNameError,
    assert_split_disjoint,
    build_manifest,
    check_declaration,
    check_declarations,
    dataset_spec,
    dataset_specs,
    dataset_texts,
    read_manifest,
)

COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200), (90, 90, 90),
          (250, 250, 250), (10, 10, 10), (120, 30, 60)]


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path, format="PNG")
    return path


def _tree(root: Path) -> Path:
    """``root/<class>/<image>``: bird (1), cat (2), dog_face (2 + a text file)."""
    _png(root / "cat" / "a.png", COLORS[0])
    _png(root / "cat" / "sub" / "b.PNG", COLORS[1])  # nested and upper-case suffix
    _png(root / "dog_face" / "c.png", COLORS[2])
    _png(root / "dog_face" / "d.png", COLORS[3])
    (root / "dog_face" / "notes.txt").write_text("not an image")
    _png(root / "bird" / "e.png", COLORS[4])
    return root


def _images(folder: Path, n: int) -> list[str]:
    return [_png(folder / f"im{i}.png", COLORS[i]).name for i in range(n)]


def _pairs(n: int = 6) -> list[dict[str, str]]:
    """Rows for images ``img/im0..n-1.png``; im0 and im3 have two captions (one repeated row), captions unique."""
    rows = [{"image": f"img/im{i}.png", "caption": f"photo number {i}", "split": "test" if i % 3 == 2 else "train"}
            for i in range(n)]
    rows.insert(2, {"image": "img/im0.png", "caption": "another view of zero", "split": "train"})
    rows.append({"image": "img/im3.png", "caption": "three  again ", "split": "train"})
    rows.append({"image": "img/im3.png", "caption": "three again", "split": "train"})  # same caption once cleaned
    return rows


def _csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("image", "caption", "split")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)] + [",".join(f'"{r[c]}"' for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build(tmp_path: Path, name: str, declaration: dict, **options):
    parquet, _ = build_manifest(name, tmp_path / "resources", tmp_path / "manifests", tmp_path / "images",
                                declaration=declaration, **options)
    return read_manifest(parquet)


# ------------------------------------------------------------------------------------------------ imagefolder

def test_imagefolder_end_to_end(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    df, info = _build(tmp_path, "my_photos", {"kind": "imagefolder", "root": str(root)})
    assert info.task == "zeroshot" and info.classnames == ["bird", "cat", "dog face"]
    assert info.templates == ["a photo of a {}."]
    assert df["sample_id"].tolist() == ["bird/e.png", "cat/a.png", "cat/sub/b.PNG", "dog_face/c.png", "dog_face/d.png"]
    assert df["label"].tolist() == [0, 1, 1, 2, 2] and set(df["split"]) == {"test"}
    assert df["image_path"][1] == str(root / "cat" / "a.png")  # referenced in place
    assert not any((tmp_path / "images").rglob("*.png"))  # nothing copied
    assert set(df["source"]) == {"my_photos"} and info.counts["classnames_source"] == "folder names"
    texts, groups = dataset_texts(df, info)
    assert texts == ["a photo of a bird.", "a photo of a cat.", "a photo of a dog face."]
    assert groups.tolist() == [0, 1, 2]


def test_imagefolder_names_templates_split_limit(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    names = tmp_path / "names.txt"
    names.write_text("a small bird\na cat\n\na dog's face\n")
    decl = {"kind": "imagefolder", "root": str(root), "classnames_file": str(names),
            "templates": ["art of {}.", "a drawing of {}."], "split": "train", "limit": 3, "seed": 1}
    assert check_declaration("mine", decl) == []
    df, info = _build(tmp_path, "mine", decl)
    assert info.classnames == ["a small bird", "a cat", "a dog's face"]
    assert info.templates == ["art of {}.", "a drawing of {}."]
    assert len(df) == 3 and sorted(df["label"].tolist()) == [0, 1, 2] and set(df["split"]) == {"train"}
    df2, _ = _build(tmp_path, "mine", decl, limit=5)  # an option override, as params' manifest section gives
    assert len(df2) == 5


def test_imagefolder_relative_root_gives_repo_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path / "data" / "photos")
    monkeypatch.chdir(tmp_path)
    df, _ = _build(Path("work"), "rel", {"kind": "imagefolder", "root": "data/photos"})
    assert df["image_path"][0] == "data/photos/bird/e.png" and Path(df["image_path"][0]).is_file()


# ------------------------------------------------------------------------------------------------ captions

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_captions_with_split_column(tmp_path: Path, fmt: str) -> None:
    _images(tmp_path / "data" / "img", 6)
    file = tmp_path / "data" / f"pairs.{fmt}"
    _csv(file, _pairs()) if fmt == "csv" else _jsonl(file, _pairs())
    df, info = _build(tmp_path, "my_pairs", {"kind": "captions", "file": str(file), "split": "split"})
    assert info.task == "pairs"
    assert df["sample_id"].tolist() == [f"img/im{i}.png" for i in range(6)]  # first-appearance order
    assert df["image_path"][0] == str(tmp_path / "data" / "img" / "im0.png")  # resolved against the file's folder
    assert list(df["captions"][0]) == ["photo number 0", "another view of zero"]
    assert list(df["captions"][3]) == ["photo number 3", "three again"]  # duplicate row dropped
    assert df["split"].tolist() == ["train", "train", "test", "train", "train", "test"]
    assert info.counts["file_rows"] == 9 and info.counts["duplicate_rows"] == 1 and info.counts["images"] == 6
    texts, groups = dataset_texts(df, info)
    assert len(texts) == 8 and groups.tolist() == [0, 0, 1, 2, 3, 3, 4, 5]


def test_captions_seeded_split_without_column(tmp_path: Path) -> None:
    _images(tmp_path / "data" / "img", 10)
    _png(tmp_path / "data" / "img" / "im9.png", COLORS[1])  # im9 has the same pixels as im1: same split
    rows = [{"image": f"img/im{i}.png", "caption": f"caption {i % 8}"} for i in range(10)]  # 0/8 and 1/9 share
    file = _csv(tmp_path / "data" / "pairs.csv", rows, columns=("image", "caption"))
    decl = {"kind": "captions", "file": str(file), "test_fraction": 0.3, "seed": 3}
    df, info = _build(tmp_path, "seeded", decl)
    assert len(df) == 10 and set(df["split"]) == {"train", "test"}
    split = dict(zip(df["sample_id"], df["split"]))
    assert split["img/im0.png"] == split["img/im8.png"] and split["img/im1.png"] == split["img/im9.png"]
    assert_split_disjoint(df)
    again, _ = _build(tmp_path, "seeded", decl)
    assert again["split"].tolist() == df["split"].tolist()
    assert info.counts["test"] == int((df["split"] == "test").sum()) and len(info.counts["file_sha256"]) == 64


def test_captions_jsonl_image_root_and_limit(tmp_path: Path) -> None:
    _images(tmp_path / "pictures", 4)
    rows = [{"img": f"im{i}.png", "text": f"picture {i}", "extra": i} for i in range(4)]
    rows.append({"img": str(tmp_path / "pictures" / "im0.png"), "text": "absolute path"})
    file = _jsonl(tmp_path / "meta" / "pairs.jsonl", rows)
    decl = {"kind": "captions", "file": str(file), "image": "img", "caption": "text",
            "image_root": str(tmp_path / "pictures"), "limit": 3}
    assert check_declaration("roots", decl) == []
    df, _ = _build(tmp_path, "roots", decl)
    assert len(df) == 3
    full, _ = _build(tmp_path, "roots", {**decl, "limit": None})
    assert len(full) == 5  # an absolute path is its own image key
    assert full["image_path"][0] == str(tmp_path / "pictures" / "im0.png")


# ------------------------------------------------------------------------------------------------ specs

def test_dataset_spec_of_declaration_works_like_registered(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    spec = dataset_spec("photos", {"kind": "imagefolder", "root": str(root), "limit": 2})
    assert isinstance(spec, DatasetSpec) and spec.sources == () and spec.kind == "imagefolder"
    assert spec.task == "zeroshot" and spec.options["root"] == str(root) and spec.options["limit"] == 2
    df, info = spec.build(tmp_path, tmp_path / "img", **spec.resolve_options({"seed": 4}))
    assert info.name == "photos" and len(df) == 2
    with pytest.raises(ValueError, match="unknown option"):
        spec.resolve_options({"roots": "x"})
    assert "photos" not in DATASETS  # declarations never touch the registry
    assert dataset_spec("coco") is DATASETS["coco"]
    with pytest.raises(UnknownNameError):
        dataset_spec("no_such_dataset")
    specs = dataset_specs({"photos": {"kind": "imagefolder", "root": str(root)}})
    assert set(specs) == set(DATASETS) | {"photos"} and specs["photos"].kind == "imagefolder"


def test_bad_declaration_is_refused_before_building(tmp_path: Path) -> None:
    decl = {"kind": "imagefolder", "root": str(tmp_path / "nope"), "templates": ["no braces"]}
    with pytest.raises(DeclarationError) as exc:
        build_manifest("mine", tmp_path, tmp_path / "out", tmp_path / "images", declaration=decl)
    lines = str(exc.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("params key 'user_datasets.mine.") for line in lines)
    assert not (tmp_path / "out").exists() and not (tmp_path / "images").exists()


def test_check_does_not_decode_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "photos")
    _images(tmp_path / "data" / "img", 6)
    file = _csv(tmp_path / "data" / "pairs.csv", _pairs())

    def no_decoding(*args, **kwargs):
        raise AssertionError("the declaration check decoded an image")

    monkeypatch.setattr(Image, "open", no_decoding)
    assert check_declaration("a", {"kind": "imagefolder", "root": str(root)}) == []
    assert check_declaration("b", {"kind": "captions", "file": str(file), "split": "split"}) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_refuses_missing_required_paths(tmp_path: Path, kind: str) -> None:
    spec = KINDS[kind]
    assert spec.required, f"kind {kind} declares no required key"
    for key in spec.required:
        missing_key = check_declaration("mine", {"kind": kind})
        assert f"params key 'user_datasets.mine.{key}': missing required key of kind {kind!r}" in missing_key
        errors = check_declaration("mine", {"kind": kind, key: str(tmp_path / "missing")})
        assert any(e.startswith(f"params key 'user_datasets.mine.{key}': ") and "does not exist" in e
                   for e in errors), errors


def test_every_kind_builder_takes_its_options() -> None:
    import inspect

    for kind in KINDS.values():
        params = inspect.signature(kind.build).parameters
        assert "name" in params and all(opt in params for opt in kind.options), kind.name


# ------------------------------------------------------------------------------------------------ refusals

def _key(key: str | None = None, name: str = "mine") -> str:
    return f"params key 'user_datasets.{name}{'.' + key if key else ''}': "


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    return _files(tmp_path)


def _files(tmp_path: Path) -> dict[str, Path]:
    """A valid tree, CSV and JSONL, plus broken variants."""
    out = {"tree": _tree(tmp_path / "photos")}
    _images(tmp_path / "data" / "img", 6)
    out["csv"] = _csv(tmp_path / "data" / "pairs.csv", _pairs())
    out["jsonl"] = _jsonl(tmp_path / "data" / "pairs.jsonl", _pairs())
    out["latin1"] = tmp_path / "data" / "latin1.csv"
    out["latin1"].write_bytes("image,caption\nimg/im0.png,caf\xe9\n".encode("latin-1"))
    out["badjson"] = tmp_path / "data" / "bad.jsonl"
    out["badjson"].write_text('{"image": "img/im0.png", "caption": "x"}\n{"image": \n')
    out["listjson"] = _jsonl(tmp_path / "data" / "list.jsonl", [["img/im0.png", "x"]])
    out["header_only"] = _csv(tmp_path / "data" / "empty.csv", [])
    out["txt"] = tmp_path / "data" / "pairs.txt"
    out["txt"].write_text("image,caption\n")
    out["noimages"] = tmp_path / "noimages"
    (out["noimages"] / "cls").mkdir(parents=True)
    (out["noimages"] / "cls" / "readme.txt").write_text("x")
    out["flat"] = tmp_path / "flat"
    _png(out["flat"] / "a.png", COLORS[0])
    out["names2"] = tmp_path / "names2.txt"
    out["names2"].write_text("one\ntwo\n")
    out["names_dup"] = tmp_path / "names_dup.txt"
    out["names_dup"].write_text("one\ntwo\none\n")
    return out


def _rows_csv(tmp_path: Path, rows: list[dict], columns=("image", "caption", "split")) -> str:
    return str(_csv(tmp_path / "data" / "case.csv", rows, columns))


REFUSALS = [
    # (declaration builder, key, fragment of the problem)
    (lambda f, t: {"kind": "video"}, "kind", "unknown kind 'video'; known kinds: captions, imagefolder"),
    (lambda f, t: {"root": str(f["tree"])}, "kind", "missing required key; known kinds:"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "roots": "x"}, "roots",
     "unknown key for kind 'imagefolder'; known keys: kind, limit, seed, root"),
    (lambda f, t: {"kind": "imagefolder"}, "root", "missing required key of kind 'imagefolder'"),
    (lambda f, t: {"kind": "imagefolder", "root": str(t / "nope")}, "root", "does not exist"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["csv"])}, "root", "is not a folder"),
    (lambda f, t: {"kind": "imagefolder", "root": 3}, "root", "must be a folder path"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["noimages"])}, "root", "no images"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["flat"])}, "root", "has no class folders"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "classnames_file": str(f["names2"])},
     "classnames_file", "has 2 non-empty lines for 3 class folders"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "classnames_file": str(f["names_dup"])},
     "classnames_file", "duplicate class names ['one']"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "classnames_file": str(t / "none.txt")},
     "classnames_file", "is not an existing file"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "templates": ["a photo of a cat."]},
     "templates", "entry 'a photo of a cat.' must be a string with exactly one '{}'"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "templates": ["{} and {}"]},
     "templates", "exactly one '{}'"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "templates": ["{"]}, "templates", "exactly one"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "templates": "a {}"}, "templates",
     "must be a non-empty list of strings"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "templates": []}, "templates", "non-empty list"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "split": "val"}, "split",
     "'val' must be 'train' or 'test'"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "limit": 0}, "limit", "positive integer"),
    (lambda f, t: {"kind": "imagefolder", "root": str(f["tree"]), "seed": "1"}, "seed", "must be an integer"),
    (lambda f, t: {"kind": "captions"}, "file", "missing required key of kind 'captions'"),
    (lambda f, t: {"kind": "captions", "file": str(t / "nope.csv")}, "file", "does not exist"),
    (lambda f, t: {"kind": "captions", "file": str(t / "data")}, "file", "is not a file"),
    (lambda f, t: {"kind": "captions", "file": str(f["txt"])}, "file", "must be a .csv or .jsonl file"),
    (lambda f, t: {"kind": "captions", "file": str(f["latin1"])}, "file", "cannot read"),
    (lambda f, t: {"kind": "captions", "file": str(f["badjson"])}, "file", "line 2 is not valid JSON"),
    (lambda f, t: {"kind": "captions", "file": str(f["listjson"])}, "file", "line 1 is list, expected a JSON object"),
    (lambda f, t: {"kind": "captions", "file": str(f["header_only"])}, "file", "has no rows"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "image": "img"}, "image",
     "column 'img' is not in the header"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "caption": "text"}, "caption",
     "column 'text' is not in the header"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "split": "fold"}, "split",
     "column 'fold' is not in the header"),
    (lambda f, t: {"kind": "captions", "file": str(f["jsonl"]), "caption": "text"}, "caption",
     "pairs.jsonl:1: column 'text' is missing, empty or not a string (and 8 more)"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "image_root": str(t / "nope")}, "image_root",
     "does not exist"),
    (lambda f, t: {"kind": "captions", "file": _rows_csv(t, [{"image": "img/im0.png", "caption": " ", "split": "x"}])},
     "caption", "case.csv:2: column 'caption' is missing, empty or not a string"),
    (lambda f, t: {"kind": "captions", "split": "split",
                   "file": _rows_csv(t, [{"image": "img/im0.png", "caption": "c", "split": "val"}])},
     "split", "case.csv:2: value 'val' is not 'train' or 'test'"),
    (lambda f, t: {"kind": "captions", "split": "split",
                   "file": _rows_csv(t, [{"image": "img/im0.png", "caption": "c", "split": "train"},
                                         {"image": "img/im0.png", "caption": "d", "split": "test"}])},
     "split", "case.csv:3: image 'img/im0.png' has rows in both train and test"),
    (lambda f, t: {"kind": "captions", "file": _rows_csv(t, [{"image": "img/im0.png", "caption": "c", "split": ""},
                                                            {"image": "img/gone.png", "caption": "d", "split": ""}])},
     "image", "1 of 2 image files do not exist"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "split": "split", "test_fraction": 0.1},
     "test_fraction", "is only used without a split column"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "test_fraction": 1.5}, "test_fraction",
     "1.5 must lie strictly between 0 and 1"),
    (lambda f, t: {"kind": "captions", "file": ["a.csv"]}, "file", "must be a non-empty string"),
    (lambda f, t: {"kind": "captions", "file": str(f["csv"]), "split": 3}, "split", "3 must be a non-empty string"),
]


@pytest.mark.parametrize("make, key, fragment", REFUSALS, ids=[f"{i}-{r[1]}" for i, r in enumerate(REFUSALS)])
def test_refusals_name_dataset_and_key(files, tmp_path, make, key, fragment) -> None:
    errors = check_declaration("mine", make(files, tmp_path))
    prefix = _key(key)
    hits = [e for e in errors if e.startswith(prefix) and fragment in e[len(prefix):]]
    assert hits, f"expected {prefix}...{fragment}... in {errors}"


def test_valid_declarations_pass(files) -> None:
    assert check_declarations({
        "a": {"kind": "imagefolder", "root": str(files["tree"])},
        "b": {"kind": "captions", "file": str(files["csv"]), "split": "split"},
        "c": {"kind": "captions", "file": str(files["jsonl"]), "test_fraction": 0.25, "limit": 3, "seed": 2},
    }) == []
    assert check_declarations(None) == []


def test_name_refusals(files) -> None:
    decl = {"kind": "imagefolder", "root": str(files["tree"])}
    taken = "params key 'user_datasets.coco': the name is already a registered dataset"
    assert check_declaration("coco", decl) == [taken]
    (bad,) = check_declaration("My Set", decl)
    assert bad.startswith("params key 'user_datasets.My Set': the name must match ^")
    assert check_declaration("mine", ["imagefolder"]) == [
        "params key 'user_datasets.mine': expected a mapping with a 'kind' key, got list"]
    assert check_declarations([decl]) == [
        "params key 'user_datasets': expected a mapping of dataset names to declarations, got list"]
    errors = check_declarations({"coco": decl, "ok": decl, "x y": decl})
    assert len(errors) == 2 and "'user_datasets.coco'" in errors[0] and "'user_datasets.x y'" in errors[1]


def test_every_refused_key_is_a_known_key_of_its_kind() -> None:
    """The refusal table covers every option of every kind (so a new key gets a refusal test)."""
    covered = {key for _, key, _ in REFUSALS}
    for kind in KINDS.values():
        missing = set(kind.options) - covered
        assert not missing, f"kind {kind.name}: no refusal case for {sorted(missing)}"
