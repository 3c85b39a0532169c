"""Encoder registry: decorator registration, discovery by package scan, lookups (no model weights are read)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import torch

import structure_align.encoders as encoders_pkg
from structure_align.encoders import (
    ENCODERS,
    FAMILIES,
    MODALITIES,
    Encoder,
    ResizeCropNormalize,
    discover,
    encoder_modality,
    global_avg_pool,
    list_encoders,
    load_encoder,
    register_encoder,
    register_family,
)
from structure_align.encoders.registry import INFRASTRUCTURE

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_registry():
    """Every test leaves ENCODERS / FAMILIES as it found them (tests register toy encoders)."""
    enc, fam = dict(ENCODERS), dict(FAMILIES)
    yield
    ENCODERS.clear()
    ENCODERS.update(enc)
    FAMILIES.clear()
    FAMILIES.update(fam)


def _boom(*args, **kwargs):
    raise AssertionError("the factory must not be called")


class ToyEncoder(Encoder):
    """A tiny vision encoder: a 3x3 conv, global-average-pooled input and conv output."""

    modality, pooling = "vision", "gap"

    def __init__(self, width: int = 4) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Conv2d(3, width, 3)
        self.layer_names, self.embed_dims = ["input", "conv"], [3, width]
        self.description = "toy conv encoder (random weights)"
        self.transform = ResizeCropNormalize(8, 8, (0.5,) * 3, (0.5,) * 3)

    def preprocess(self, images):
        return self.transform.batch(images)

    def forward_layers(self, batch):
        x = batch.to(self.device)
        return [global_avg_pool(x), global_avg_pool(self.model(x))]


# ---------------------------------------------------------------- what the package registers

def test_list_encoders_format_and_builtins():
    names = list_encoders()
    n = len(ENCODERS)
    assert names[:n] == sorted(ENCODERS) and names[n:] == [f"{p}:<spec>" for p in sorted(FAMILIES)]
    # the workflow's params.yaml and the docs name these
    for name in ("effnet-lite0", "dinov2-s-imgfocus", "minilm-l6", "mpnet-base", "hf:<spec>", "timm:<spec>",
                 "openclip-image:<spec>", "openclip-text:<spec>"):
        assert name in names


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_registered_encoder_entry_and_cheap_modality(name, monkeypatch):
    entry = ENCODERS[name]
    assert entry.name == name and callable(entry.factory)
    assert entry.modality in MODALITIES, f"{name}: give modality= at registration (keeps encoder_modality cheap)"
    assert entry.description.strip()
    assert entry.factory.__module__.startswith(encoders_pkg.__name__ + ".")
    monkeypatch.setitem(ENCODERS, name, dataclasses.replace(entry, factory=_boom))
    assert encoder_modality(name) == entry.modality


@pytest.mark.parametrize("prefix", sorted(FAMILIES))
def test_registered_family_entry(prefix, monkeypatch):
    family = FAMILIES[prefix]
    assert family.prefix == prefix and callable(family.factory) and family.description.strip()
    assert family.modality in MODALITIES or callable(family.modality)
    if isinstance(family.modality, str):
        monkeypatch.setitem(FAMILIES, prefix, dataclasses.replace(family, factory=_boom))
        assert encoder_modality(f"{prefix}:any-model-spec") == family.modality


def test_discovery_imported_every_encoder_module():
    modules = [m.name for m in pkgutil.iter_modules(encoders_pkg.__path__)]
    expected = [m for m in modules if not m.startswith("_") and m not in INFRASTRUCTURE]
    assert expected and all(f"{encoders_pkg.__name__}.{m}" in sys.modules for m in expected)
    assert {e.factory.__module__.rsplit(".", 1)[1] for e in [*ENCODERS.values(), *FAMILIES.values()]} <= \
        set(expected)
    # idempotent: modules already imported are not executed again, nothing is re-registered
    before = (dict(ENCODERS), dict(FAMILIES))
    assert discover(encoders_pkg.__name__) == expected
    assert (ENCODERS, FAMILIES) == before


def test_importing_encoders_is_cheap():
    heavy = ["transformers", "timm", "open_clip", "onnx", "onnxruntime", "efficientnet_lite_pytorch", "torchvision"]
    code = ("import sys, structure_align.encoders as e; assert e.list_encoders(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- registering

def test_decorator_registered_toy_encoder_is_found():
    @register_encoder("toy-test", modality="vision", description="toy conv encoder")
    def load_toy(width: int = 4) -> ToyEncoder:
        return ToyEncoder(width)

    assert callable(load_toy) and ENCODERS["toy-test"].factory is load_toy  # the decorator returns the function
    assert "toy-test" in list_encoders() and encoder_modality("toy-test") == "vision"
    enc = load_encoder("toy-test", device="cpu", width=6)
    assert isinstance(enc, ToyEncoder) and enc.name == "toy-test" and not enc.model.training
    from PIL import Image

    feats = enc.forward_layers(enc.preprocess([Image.new("RGB", (12, 10), (200, 10, 30))] * 2))
    assert [tuple(f.shape) for f in feats] == [(2, 3), (2, 6)]

    # the same function again (a re-imported module) is fine; another factory under the name is not
    register_encoder("toy-test", load_toy, modality="vision", description="toy conv encoder")
    with pytest.raises(ValueError, match="'toy-test' is already registered"):
        @register_encoder("toy-test", modality="vision")
        def load_other() -> ToyEncoder:
            return ToyEncoder(2)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("toy-test", lambda: ToyEncoder(2), modality="vision")
    assert ENCODERS["toy-test"].factory is load_toy

    register_encoder("toy-test", lambda: ToyEncoder(2), modality="vision", overwrite=True)
    assert load_encoder("toy-test", device="cpu").embed_dims == [3, 2]


def test_reimported_module_registers_again_without_error(tmp_path, monkeypatch):
    mod_name = "toy_encoder_module_for_reimport"
    (tmp_path / f"{mod_name}.py").write_text(textwrap.dedent("""
        from structure_align.encoders import register_encoder, register_family
        from test_encoders_registry import ToyEncoder

        @register_encoder("toy-reimport", modality="vision", description="toy")
        def load_toy():
            return ToyEncoder(3)

        @register_family("toyfam", modality="vision", description="toy family")
        def load_toy_family(spec):
            return ToyEncoder(int(spec))
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        first = importlib.import_module(mod_name)
        second = importlib.reload(first)
        assert ENCODERS["toy-reimport"].factory is second.load_toy
        sys.modules.pop(mod_name)
        third = importlib.import_module(mod_name)
        assert third is not second and ENCODERS["toy-reimport"].factory is third.load_toy
        assert FAMILIES["toyfam"].factory is third.load_toy_family
        assert load_encoder("toyfam:5", device="cpu").embed_dims == [3, 5]
        assert encoder_modality("toyfam:5") == "vision"
    finally:
        sys.modules.pop(mod_name, None)


def test_discover_scans_a_package_and_skips_infrastructure(tmp_path, monkeypatch):
    pkg = tmp_path / "toy_encoder_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    for skipped in ("_helper", "base", "registry", "pooling"):
        (pkg / f"{skipped}.py").write_text("raise RuntimeError('infrastructure must not be imported')\n")
    (pkg / "mine.py").write_text(textwrap.dedent("""
        from structure_align.encoders import register_encoder
        from test_encoders_registry import ToyEncoder

        @register_encoder("toy-discovered", modality="vision", description="toy")
        def load_toy():
            return ToyEncoder(2)
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "toy-discovered" not in ENCODERS
        assert discover("toy_encoder_pkg") == ["mine"]
        assert load_encoder("toy-discovered", device="cpu").embed_dims == [3, 2]
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "toy_encoder_pkg"]:
            sys.modules.pop(name)


def test_function_call_form_and_modality_fallback():
    assert register_encoder("const-test", ToyEncoder) is ToyEncoder  # a class is a factory too
    enc = load_encoder("const-test", device="cpu")
    assert enc.name == "const-test" and enc.embed_dims == [3, 4] and not enc.model.training
    # no modality given at registration: found by building the encoder
    assert encoder_modality("const-test") == "vision"
    with pytest.raises(TypeError, match="no tokenize"):
        enc.tokenize(["x"])
    register_family("constfam", lambda spec: ToyEncoder(len(spec)), lambda spec: "vision")
    assert encoder_modality("constfam:abc") == "vision"
    assert load_encoder("constfam:abc", device="cpu").embed_dims == [3, 3]


def test_unknown_duplicate_and_malformed_registrations():
    with pytest.raises(KeyError, match="unknown encoder 'nope'"):
        load_encoder("nope")
    with pytest.raises(KeyError, match="empty model spec"):
        encoder_modality("timm:")
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("effnet-lite0", _boom, modality="vision")
    with pytest.raises(ValueError, match="already registered"):
        register_family("hf", _boom, "text")
    with pytest.raises(ValueError, match="modality"):
        register_encoder("x-enc", _boom, modality="audio")
    with pytest.raises(ValueError, match="':'"):
        register_encoder("a:b", _boom, modality="text")
    # no "module:function" strings, neither as factory nor as family modality
    with pytest.raises(TypeError, match="no 'module:function' strings"):
        register_encoder("str-enc", ".offline:load_effnet_lite0", modality="vision")
    with pytest.raises(ValueError, match="spec -> modality"):
        register_family("strfam", _boom, ".hf:hf_modality")
    with pytest.raises(TypeError, match="modality is required"):
        register_family("nomod", _boom)
    assert "str-enc" not in ENCODERS and "strfam" not in FAMILIES and "nomod" not in FAMILIES


def test_registered_modality_must_match_the_built_encoder():
    register_encoder("liar", ToyEncoder, modality="text")
    assert encoder_modality("liar") == "text"  # cheap answer from the registry ...
    with pytest.raises(ValueError, match="registered as text"):
        load_encoder("liar", device="cpu")  # ... checked when the encoder is built
    register_family("badfam", _boom, lambda spec: "audio")
    with pytest.raises(ValueError, match="returned 'audio'"):
        encoder_modality("badfam:x")
