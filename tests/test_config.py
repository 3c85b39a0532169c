"""params.yaml validation (schema + registry names), variants and run paths."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from structure_align import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/params.schema.yaml"


class _Spec(SimpleNamespace):
    def resolve_options(self, options):
        unknown = set(options) - {"limit", "seed", "size", "split", "test_fraction"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}")
        return options


DATASETS = {name: _Spec(task=task) for name, task in [
    ("tuxpaint", "pairs"), ("emoji", "pairs"), ("fashion_mnist", "zeroshot"), ("gcompris_categorization", "zeroshot"),
    ("art4apps", "zeroshot"), ("gcompris_explore_title", "retrieval"), ("gcompris_explore_desc", "retrieval")]}
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


def test_default_grid_matches_the_issue(params: dict) -> None:
    labels = [v.label for v in cfgmod.variants(params)]
    assert labels == ["Linear + Last", "Linear + Similar", "Linear + Similar + R_S", "Linear + Last + R_S"]
    assert params["training"]["fractions"] == [0.1, 0.25, 0.5, 1.0]
    assert len(params["training"]["seeds"]) == 3
    assert (params["structure"]["lambda"], params["structure"]["levels"], params["structure"]["tau"]) == (10, 1, 0.05)
    assert len(cfgmod.run_dirs(params)) == 4 * 4 * 3


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(unknown_key=1), "unknown_key"),
    (lambda c: c["training"].update(fractions=[0.5, 1.5]), "training.fractions[1]"),
    (lambda c: c["training"].update(fractions=[0.0]), "training.fractions[0]"),
    (lambda c: c["training"].update(epochs="ten"), "training.epochs"),
    (lambda c: c["structure"].update(levels=1.5), "structure.levels"),
    (lambda c: c["structure"].update(extra=1), "structure"),
    (lambda c: c["methods"].append({"head": "transformer", "layers": "last", "structure": False}), "methods[4].head"),
    (lambda c: c.update(device="tpu"), "device"),
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


def test_variants_paths_and_overrides(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["methods"] = [{"head": "linear", "layers": "last", "structure": False},
                       {"head": "csa", "layers": "similar", "structure": {"tau": 0.2}}]
    plain, csa = cfgmod.variants(conf)
    assert plain.path == "linear/layers~last/lambda~0/levels~0/tau~0" and not plain.uses_structure
    assert csa.path == "csa/layers~similar/lambda~10/levels~1/tau~0.2" and csa.label == "CSA + Similar + R_S"
    assert cfgmod.run_dir("v", "t", csa, 1.0, 42) == \
        "results/runs/v__t/csa/layers~similar/lambda~10/levels~1/tau~0.2/frac~1/seed~42"
    # a lambda change moves only the R_S runs to new paths
    changed = copy.deepcopy(conf)
    changed["structure"]["lambda"] = 5
    assert [v.path for v in cfgmod.variants(changed)] == [plain.path, csa.path.replace("lambda~10", "lambda~5")]


def test_duplicate_variant_and_zero_lambda_are_rejected(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["methods"].append({"head": "linear", "layers": "last", "structure": False})
    with pytest.raises(cfgmod.ParamsError, match=r"methods\[4\]"):
        cfgmod.variants(conf)
    conf = copy.deepcopy(params)
    conf["methods"] = [{"head": "linear", "layers": "last", "structure": {"lambda": 0}}]
    with pytest.raises(cfgmod.ParamsError, match="structure: false"):
        cfgmod.variants(conf)


@pytest.mark.parametrize("value, text", [(10, "10"), (10.0, "10"), (0.05, "0.05"), (1.0, "1"), (0.25, "0.25"),
                                         (1e-4, "0.0001")])
def test_fmt_value(value, text: str) -> None:
    assert cfgmod.fmt_value(value) == text


def test_fmt_value_rejects_non_numbers() -> None:
    with pytest.raises(cfgmod.ParamsError):
        cfgmod.fmt_value(float("nan"))
    with pytest.raises(cfgmod.ParamsError):
        cfgmod.fmt_value(True)


def test_merge_params_is_recursive_and_replaces_lists() -> None:
    merged = cfgmod.merge_params({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1}


def test_eval_and_grid_datasets_have_no_repeats(params: dict) -> None:
    assert cfgmod.eval_datasets(params) == ["tuxpaint", "emoji", "gcompris_explore_title", "gcompris_explore_desc",
                                            "fashion_mnist", "gcompris_categorization", "art4apps"]
    assert cfgmod.grid_datasets(params) == cfgmod.eval_datasets(params)
