"""params.yaml validation (schema + registry names, non-finite values) and merging."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from structure_align import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = cfgmod.SCHEMA_PATH


class _Spec(SimpleNamespace):
    def resolve_options(self, options):
        unknown = set(options) - {"limit", "seed", "size", "split", "test_fraction"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}")
        return options


DATASETS = {name: _Spec(task=task) for name, task in [
    ("tuxpaint", "pairs"), ("emoji", "pairs"), ("fashion_mnist", "zeroshot"), ("gcompris_categorization", "zeroshot"),
    ("art4apps", "zeroshot"), ("gcompris_explore_title", "retrieval"), ("gcompris_explore_desc", "retrieval"),
    ("fashion_mnist_train", "zeroshot")]}
ENCODERS = {"effnet-lite0": "vision", "dinov2-s-imgfocus": "vision", "minilm-l6": "text", "mpnet-base": "text"}


def _modality(name: str) -> str:
    return ENCODERS[name]


@pytest.fixture()
def params() -> dict:
    return cfgmod.load_yaml(ROOT / "params.yaml")


def _check(config: dict) -> None:
    cfgmod.check_params(config, SCHEMA, datasets=DATASETS, encoder_modality=_modality)


def test_default_params_and_smoke_config_are_valid(params: dict) -> None:
    _check(params)
    smoke = cfgmod.merge_params(params, cfgmod.load_yaml(ROOT / "workflow/configs/smoke.yaml"))
    _check(smoke)
    assert smoke["results_dir"] != params["results_dir"]  # smoke never overwrites committed outputs


def test_schema_ships_with_the_package() -> None:
    assert SCHEMA.is_file() and SCHEMA.parent.name == "structure_align"


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(unknown_key=1), "unknown_key"),
    (lambda c: c["training"].update(fractions=[0.5, 1.5]), "training.fractions[1]"),
    (lambda c: c["training"].update(fractions=[0.0]), "training.fractions[0]"),
    (lambda c: c["training"].update(epochs="ten"), "training.epochs"),
    (lambda c: c["structure"].update(levels=1.5), "structure.levels"),
    (lambda c: c["structure"].update(extra=1), "structure"),
    (lambda c: c["methods"].append({"head": "transformer", "layers": "last", "structure": False}), "methods[10].head"),
    (lambda c: c.update(device="tpu"), "device"),
    (lambda c: c["structure"].update({"lambda": float("nan")}), "structure.lambda"),
    (lambda c: c["training"].update(lr=float("inf")), "training.lr"),
    (lambda c: c["methods"][0].update(layers="first"), "methods[0].layers"),
    (lambda c: c["methods"][2].update(structure={"warmup_steps": 3}), "methods[2].structure"),
    (lambda c: c["encoders"].update(revisions={"openai/clip-vit-large-patch14-336": "main"}), "encoders.revisions"),
    (lambda c: c["encoders"].update(revisions={"not a repo": None}), "encoders.revisions"),
])
def test_schema_errors_name_the_key(params: dict, mutate, key: str) -> None:
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(cfgmod.ParamsError) as err:
        _check(bad)
    assert key in str(err.value)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c["datasets"]["train"].append("imagenet21k"), "datasets.train[2]': unknown dataset 'imagenet21k'"),
    (lambda c: c["datasets"]["train"].append("art4apps"), "datasets.train[2]': dataset 'art4apps' has task"),
    (lambda c: c["datasets"]["zeroshot"].append("emoji"), "datasets.zeroshot[3]': dataset 'emoji' has task"),
    (lambda c: c["encoders"]["vision"].append("resnet-9000"), "encoders.vision[1]': unknown or unresolvable"),
    (lambda c: c["encoders"]["text"].append("effnet-lite0"), "encoders.text[1]': encoder 'effnet-lite0' is a vision"),
    (lambda c: c["manifest"].update(emoji={"colour": "red"}), "manifest.emoji': unknown option"),
    (lambda c: c["manifest"].update(nowhere={"limit": 3}), "manifest.nowhere': unknown dataset"),
])
def test_registry_errors_name_the_key(params: dict, mutate, fragment: str) -> None:
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(cfgmod.ParamsError) as err:
        _check(bad)
    assert fragment in str(err.value)


def test_duplicate_variant_is_refused_by_check(params: dict) -> None:
    bad = copy.deepcopy(params)
    bad["methods"].append(dict(bad["methods"][0]))
    with pytest.raises(cfgmod.ParamsError, match=rf"methods\[{len(params['methods'])}\]"):
        _check(bad)


def test_unknown_head_is_refused_with_the_registry_list(params: dict) -> None:
    bad = copy.deepcopy(params)
    bad["methods"].append({"head": "transformer", "layers": "last", "structure": False})
    with pytest.raises(cfgmod.ParamsError, match=rf"methods\[{len(params['methods'])}\].head': unknown head 'transformer'"):
        _check(bad)


def test_merge_params_is_recursive_and_replaces_lists() -> None:
    merged = cfgmod.merge_params({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1}


def test_encoder_revisions_are_optional_and_validated(params: dict) -> None:
    ok = copy.deepcopy(params)
    ok["encoders"]["revisions"] = {"timm/vit_large_patch14_dinov2.lvd142m": "0" * 40,
                                   "sentence-transformers/all-roberta-large-v1": None}
    _check(ok)
