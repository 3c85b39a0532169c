"""The worked examples of the documentation run as written (the code is read from the Markdown files).

* docs/datasets.md "Adding a dataset": the example module is installed as one new file of ``structure_align.data``
  (found by the package scan like a real dataset module), its local source is acquired and its manifest built; the
  params snippet beside it passes the parameter check.
* docs/datasets.md "Your own datasets": the declared image folder and caption file pass the check and build.
* docs/encoders.md "Adding an encoder": the example loader is installed as one new file of
  ``structure_align.encoders``, loaded with random weights, compared with torchvision's own forward pass and used
  for a feature file.
* docs/library.md: the library example runs and gives the numbers its comments promise.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from docs_util import ROOT, example
from PIL import Image, ImageDraw

import structure_align.data as data_pkg
import structure_align.encoders as encoders_pkg
from structure_align.config import ParamsError, check_params, load_params, merge_params
from structure_align.data import acquire, build_manifest, read_manifest
from structure_align.data import registry as data_registry
from structure_align.encoders import ENCODERS, discover, encoder_modality, load_encoder
from structure_align.extract import extract_features
from structure_align.features import load_features

N_SKETCHES = 20
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle", "cross", "ring")


def _draw(path: Path, colour: str, shape: str, size: int) -> None:
    img = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(img)
    box = (32 - size, 32 - size, 32 + size, 32 + size)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(32, 32 - size), (32 - size, 32 + size), (32 + size, 32 + size)], fill=fill)
    elif shape == "cross":
        d.rectangle((32 - size, 29, 32 + size, 35), fill=fill)
        d.rectangle((29, 32 - size, 35, 32 + size), fill=fill)
    else:
        d.ellipse(box, outline=fill, width=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _install(package: object, module_file: str, code: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write ``code`` as ``<tmp>/<module_file>`` and put ``tmp`` on ``package.__path__`` (a new file of it)."""
    path = tmp / Path(module_file).name
    path.write_text(code, encoding="utf-8")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp)])
    return f"{package.__name__}.{path.stem}"


@pytest.fixture()
def sketches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The dataset example installed as ``structure_align.data.sketches``; yields the resources folder."""
    code = example("datasets.md", "src/structure_align/data/sketches.py")
    (tmp_path / "data_pkg").mkdir()
    module = _install(data_pkg, "sketches.py", code, tmp_path / "data_pkg", monkeypatch)
    try:
        assert "sketches" in data_pkg._dataset_modules()  # the package scan finds the new file
        importlib.import_module(module)
        assert data_registry.SOURCE_ORIGINS["my-sketches"] == module
        resources = tmp_path / "resources"
        lines = []
        for i in range(N_SKETCHES):
            colour, shape = list(COLOURS)[i % 4], SHAPES[i // 4]
            _draw(resources / "my-sketches" / f"img/s{i:02d}.png", colour, shape, 10 + i)
            lines.append(f"img/s{i:02d}.png\ta {colour}   {shape} of size {10 + i}")
        (resources / "my-sketches" / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        yield resources
    finally:
        sys.modules.pop(module, None)
        data_registry.DATASETS.pop("sketches", None)
        data_registry.SOURCES.pop("my-sketches", None)
        data_registry.SOURCE_ORIGINS.pop("my-sketches", None)


def _build_sketches(resources: Path, out: Path, **options) -> Path:
    acquire("my-sketches", resources)  # a local source: checks captions.tsv, writes SOURCE.json
    assert (resources / "my-sketches" / "SOURCE.json").is_file()
    parquet, _ = build_manifest("sketches", resources, out / "manifests", out / "images", **options)
    return parquet


def test_dataset_example_is_one_new_file(sketches: Path, tmp_path: Path) -> None:
    parquet = _build_sketches(sketches, tmp_path / "results", test_fraction=0.25)
    df, info = read_manifest(parquet)
    assert info.name == "sketches" and info.task == "pairs" and len(df) == N_SKETCHES
    assert (df["split"] == "test").sum() == 5 == info.counts["test"]
    assert df["captions"][0] == ["a red circle of size 10"]  # whitespace runs collapsed
    train, test = ({c[0] for c in df["captions"][df["split"] == s]} for s in ("train", "test"))
    assert not train & test
    # same options, same bytes
    again = _build_sketches(sketches, tmp_path / "again", test_fraction=0.25)
    assert again.read_bytes() == parquet.read_bytes()


def test_dataset_example_params_snippet_passes_the_check(sketches: Path) -> None:
    text = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")
    snippet = text.split("<!-- example: src/structure_align/data/sketches.py -->", 1)[1]
    snippet = snippet.split("```yaml", 1)[1].split("```", 1)[0]
    config = merge_params(load_params(ROOT / "params.yaml"), yaml.safe_load(snippet))
    assert config["datasets"]["train"] == ["sketches"]
    check_params(config)
    bad = merge_params(config, {"manifest": {"sketches": {"test_frac": 0.3}}})
    with pytest.raises(ParamsError, match=r"params key 'manifest.sketches': .*unknown option"):
        check_params(bad)
    with pytest.raises(ParamsError, match=r"params key 'datasets.zeroshot\[0\]': dataset 'sketches' has task"):
        check_params(merge_params(config, {"datasets": {"zeroshot": ["sketches"]}}))


def test_user_datasets_snippet_passes_the_check_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The declaration example of docs/datasets.md "Your own datasets", with the folder and file it names."""
    text = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")
    snippet = yaml.safe_load(text.split("## Your own datasets", 1)[1].split("```yaml", 1)[1].split("```", 1)[0])
    monkeypatch.chdir(tmp_path)  # the declared paths are relative to the working directory
    for k, (colour, shape) in enumerate([(c, s) for c in COLOURS for s in SHAPES[:3]]):
        _draw(Path("data/photos") / shape / f"{colour}.png", colour, shape, 12 + k)
    rows = ["image,caption"]
    for i in range(16):
        colour, shape = list(COLOURS)[i % 4], SHAPES[i // 4]
        _draw(Path("data/img") / f"p{i}.png", colour, shape, 8 + i)
        rows.append(f"img/p{i}.png,a {colour} {shape} number {i}")
    Path("data/pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = merge_params(load_params(ROOT / "params.yaml"), snippet)
    check_params(config)
    for name, task, n in (("my_photos", "zeroshot", 12), ("my_pairs", "pairs", 16)):
        parquet, info = build_manifest(name, "resources", "out/manifests", "out/images",
                                       declaration=config["user_datasets"][name])
        df, _ = read_manifest(parquet)
        assert info.task == task and len(df) == n
    assert info.counts["test"] == 4  # test_fraction 0.25 of 16 pairs
    config["user_datasets"]["my_photos"]["root"] = "data/no_such_folder"
    with pytest.raises(ParamsError, match=r"params key 'user_datasets.my_photos.root': folder .* does not exist"):
        check_params(config)


@pytest.fixture()
def resnet_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The encoder example installed as a new module of ``structure_align.encoders``."""
    code = example("encoders.md", "src/structure_align/encoders/resnet18_local.py")
    (tmp_path / "encoders_pkg").mkdir()
    module = _install(encoders_pkg, "resnet18_local.py", code, tmp_path / "encoders_pkg", monkeypatch)
    try:
        assert "resnet18_local" in discover(encoders_pkg.__name__)  # the package scan imports the new file
        yield module
    finally:
        sys.modules.pop(module, None)
        ENCODERS.pop("resnet18-local", None)


def test_encoder_example_is_one_decorated_loader(resnet_example: str, sketches: Path, tmp_path: Path) -> None:
    from torchvision.models import resnet18

    assert ENCODERS["resnet18-local"].factory.__module__ == resnet_example
    assert encoder_modality("resnet18-local") == "vision"
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights)
    enc = load_encoder("resnet18-local", device="cpu", weights=weights)
    assert enc.name == "resnet18-local" and enc.n_layers == 5 and not enc.model.training

    # the last layer is what torchvision's own forward pass feeds into the classifier
    images = [Image.new("RGB", (80, 60), c) for c in COLOURS.values()]
    batch = enc.preprocess(images)
    captured = {}
    enc.model.avgpool.register_forward_hook(lambda m, i, o: captured.update(out=torch.flatten(o, 1)))
    with torch.inference_mode():
        feats = enc.forward_layers(batch)
        enc.model(batch)
    assert [tuple(f.shape) for f in feats] == [(4, d) for d in (64, 64, 128, 256, 512)]
    torch.testing.assert_close(feats[-1], captured["out"], rtol=1e-5, atol=1e-5)

    manifest = _build_sketches(sketches, tmp_path / "results")
    out = extract_features(manifest, enc, tmp_path / "results/features/sketches/resnet18-local.safetensors",
                           batch_size=8, device="cpu", progress=False)
    fs = load_features(out, encoder="resnet18-local", modality="vision")
    assert fs.layer_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert fs.embed_dims == [64, 64, 128, 256, 512] and fs.n_rows == N_SKETCHES
    assert all(np.isfinite(layer.numpy()).all() for layer in fs.layers)


def test_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # the example saves heads.safetensors in the working directory
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {"__name__": "docs_library_example"}
        exec(compile(example("library.md", "library"), "docs/library.md", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    ns = namespace
    assert (ns["i"], ns["j"]) == (2, 1)  # the pair that shares the latent, as the comment says
    assert sorted(ns["parts"]) == ["clip", "rs", "rs_img", "rs_lambda", "rs_txt", "total"]
    assert ns["res"].best_epoch >= 0 and (tmp_path / "heads.safetensors").is_file()
    assert set(ns["metrics"]) >= {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    assert ns["zs"]["n_images"] == 100
    # the metrics are what the embeddings give, recomputed here by argmax (no ties in float cosines)
    img, txt = F.normalize(ns["img_emb"], dim=1), F.normalize(ns["txt_emb"], dim=1)
    sim = img @ txt.T
    assert ns["metrics"]["i2t_r1"] == pytest.approx(100 * (sim.argmax(1) == torch.arange(100)).double().mean().item())
    assert ns["metrics"]["t2i_r1"] == pytest.approx(100 * (sim.argmax(0) == torch.arange(100)).double().mean().item())
    with torch.no_grad():
        protos = F.normalize(ns["aligner"].encode_text(ns["prompts"]), dim=1)
    top1 = 100 * ((img @ protos.T).argmax(1) == ns["labels"]).double().mean().item()
    assert ns["zs"]["top1"] == pytest.approx(top1)
    # the aligned space carries the shared latent: well above chance (1 % retrieval, 25 % for 4 classes)
    assert ns["metrics"]["i2t_r1"] > 10 and ns["zs"]["top1"] > 40
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("(2, 1)") and len(printed) == 4
    assert printed[2] == f"{ns['res'].best_epoch} {round(ns['metrics']['i2t_r1'], 1)} {round(ns['zs']['top1'], 1)}"


def test_your_data_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/your-data.md: the config passes the check and its manifests build through the pre-flight check, which
    drops (skip) the bad files of a messy clip-art folder and composites its transparent drawings on white."""
    from structure_align.data.images import open_rgb

    snippet = yaml.safe_load(example("your-data.md", "my-data.yaml"))
    monkeypatch.chdir(tmp_path)
    root = Path("data/clipart")
    rows = ["image,caption"]
    for i in range(60):
        colour, shape = list(COLOURS)[i % 4], SHAPES[(i // 4) % 5]
        _draw(root / "img" / f"p{i:02d}.png", colour, shape, 6 + i % 20)
        rows.append(f"img/p{i:02d}.png,a {colour} {shape} of size {6 + i % 20}")
    # a transparent drawing whose transparent pixels are black, and two bad files
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[20:44, 20:44] = (220, 30, 30, 255)
    Image.fromarray(rgba, mode="RGBA").save(root / "img" / "clip.png")
    rows.append("img/clip.png,a red square on nothing")
    (root / "img" / "empty.png").write_bytes(b"")
    (root / "img" / "readme.png").write_text("not an image")
    rows += ["img/empty.png,an empty file", "img/readme.png,a text file"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for k, (colour, shape) in enumerate([(c, s) for c in COLOURS for s in SHAPES[:3]]):
        _draw(root / "classes" / shape / f"{colour}.png", colour, shape, 10 + k)
    config = merge_params(load_params(ROOT / "params.yaml"), snippet)
    check_params(config)
    for name, d in config["user_datasets"].items():
        assert [encoder_modality(config["encoders"][m][0]) for m in ("vision", "text")] == ["vision", "text"]
        parquet, info = build_manifest(name, "resources", "out/manifests", "out/images", declaration=d,
                                       images=config["images"])
        df, _ = read_manifest(parquet)
        check = info.counts["image_check"]
        if name == "my_pairs":
            assert len(df) == 61 and check["bad"] == 2 and check["transparent_composited_on_white"] == 1
            assert {Path(s["path"]).name for s in check["skipped"]} == {"empty.png", "readme.png"}
            assert open_rgb(root / "img" / "clip.png").getpixel((0, 0)) == (255, 255, 255)
        else:
            assert info.task == "zeroshot" and len(df) == 12 and check["bad"] == 0
    with pytest.raises(ValueError, match="2 of 63 images refused"):
        build_manifest("my_pairs", "resources", "out/manifests", "out/images",
                       declaration=config["user_datasets"]["my_pairs"], images={"on_bad_image": "error"})
