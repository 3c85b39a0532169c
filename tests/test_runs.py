"""The run identity: variants, sizes, the path grammar (both directions) and params -> TrainConfig."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from structure_align import config as cfgmod
from structure_align import runs
from structure_align.heads import HEADS
from structure_align.trainconfig import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def params() -> dict:
    return cfgmod.load_yaml(ROOT / "params.yaml")


def test_variants_paths_and_overrides(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["methods"] = [{"head": "linear", "layers": "last", "structure": False},
                       {"head": "csa", "layers": "similar", "structure": {"tau": 0.2}}]
    plain, csa = runs.variants(conf)
    assert plain.path == "linear/layers~last/lambda~0/levels~0/tau~0/weighting~none/distance~none"
    assert not plain.uses_structure
    assert csa.path == "csa/layers~similar/lambda~10/levels~1/tau~0.2/weighting~none/distance~cosine"
    assert csa.label == "CSA + Similar + R_S"
    spec = runs.RunSpec("v", "t", csa, runs.Size("frac", 1.0), 42)
    assert spec.dir("results") == \
        "results/runs/v__t/csa/layers~similar/lambda~10/levels~1/tau~0.2/weighting~none/distance~cosine/frac~1/seed~42"
    # a lambda change moves only the R_S runs to new paths
    changed = copy.deepcopy(conf)
    changed["structure"]["lambda"] = 5
    assert [v.path for v in runs.variants(changed)] == [plain.path, csa.path.replace("lambda~10", "lambda~5")]


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("size", [runs.Size("frac", 0.25), runs.Size("n", 1000)])
@pytest.mark.parametrize("structure", [None, {"lambda": 10, "levels": 2, "tau": 0.2, "weighting": "inverse",
                                              "distance": "rbf"}])
def test_run_path_round_trip(head: str, size: runs.Size, structure: dict | None) -> None:
    spec = runs.RunSpec("enc-a", "hf:org/model", runs.Variant.make(head, "v3t1", structure), size, 7)
    back = runs.RunSpec.from_path(spec.dir("some/root") + "/metrics.json")
    assert back == spec and back.variant.values() == spec.variant.values()
    assert runs.RunSpec.from_path(spec.dir("x")) == spec


def test_group_pattern_matches_every_run_dir_and_the_wildcard_constraints(params: dict) -> None:
    pattern = runs.group_pattern("results")
    regex = re.escape(pattern)
    for name in re.findall(r"\{(\w+)\}", pattern):
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{runs.WILDCARDS[name]})", 1)
    for spec in runs.run_specs(params):
        match = re.fullmatch(regex, spec.group_dir("results"))
        assert match, spec.group_dir("results")
        assert match["head"] == spec.variant.head and match["size"] == spec.size.component


def test_from_path_rejects_other_layouts() -> None:
    with pytest.raises(runs.RunPathError, match="not a run directory"):
        runs.RunSpec.from_path("results/runs/v__t/linear/layers~last/frac~1/seed~1")
    with pytest.raises(runs.RunPathError, match="unknown head"):
        runs.RunSpec.from_path("r/runs/v__t/gpt/layers~last/lambda~0/levels~0/tau~0/weighting~none/distance~none/"
                               "frac~1/seed~1")


def test_sizes_fractions_then_counts() -> None:
    sizes = runs.sizes({"training": {"fractions": [0.5, 1.0], "sizes": [100]}})
    assert [s.component for s in sizes] == ["frac~0.5", "frac~1", "n~100"]
    assert runs.Size.parse("n~100") == runs.Size("n", 100)
    with pytest.raises(runs.RunPathError):
        runs.Size.parse("pct~5")


def test_train_config_mapping_is_mechanical(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["csa"] = {"epochs": 3}
    rs, base = runs.variants(conf)[2], runs.variants(conf)[0]
    cfg = runs.train_config(conf, runs.RunSpec("v", "t", rs, runs.Size("frac", 1.0), 7))
    assert cfg.seed == 7 and cfg.head == "linear" and cfg.epochs == conf["training"]["epochs"]
    assert cfg.temperature == conf["training"]["temperature"] and cfg.rs_tau == conf["structure"]["tau"]
    assert cfg.rs_lambda == conf["structure"]["lambda"]
    assert cfg.csa_epochs == TrainConfig().csa_epochs  # the csa block reaches CSA runs only (train_blocks)
    assert cfg.rs_warmup_steps == conf["structure"]["warmup_steps"]
    off = runs.train_config(conf, runs.RunSpec("v", "t", base, runs.Size("frac", 1.0), 7))
    assert off.rs_lambda == 0 and off.rs_warmup_steps == cfg.rs_warmup_steps  # both arms share the warm-up
    conf["training"]["frobnicate"] = 1
    with pytest.raises(ValueError, match="frobnicate"):
        runs.train_config(conf, runs.RunSpec("v", "t", base, runs.Size("frac", 1.0), 7))


def _csa_spec(structure: dict | None) -> runs.RunSpec:
    return runs.RunSpec("v", "t", runs.Variant.make("csa", "last", structure), runs.Size("frac", 1.0), 7)


def test_csa_runs_read_only_what_csa_uses(params: dict) -> None:
    """A CSA run without R_S depends on the CCA fit keys only; CSA + R_S adds the refinement, never the warm-up."""
    conf = copy.deepcopy(params)
    conf["csa"] = {"epochs": 3, "lr": 0.01, "reg": 0.1, "batch_size": None}
    plain, refined = _csa_spec(None), _csa_spec({"lambda": 10, "levels": 1, "tau": 0.2})
    blocks = runs.train_blocks(conf, plain)
    assert blocks["csa"] == {"reg": 0.1} and blocks["structure"] == {}
    assert set(blocks["training"]) == {"dim", "val_fraction", "val_seed"}
    cfg = runs.train_config(conf, plain)
    assert cfg.csa_reg == 0.1 and cfg.csa_epochs == TrainConfig().csa_epochs and cfg.rs_lambda == 0
    blocks = runs.train_blocks(conf, refined)
    assert blocks["csa"] == conf["csa"] and "batch_size" in blocks["training"]  # csa.batch_size null -> training's
    assert not {"warmup_steps", "warmup_epochs"} & set(blocks["structure"])
    cfg = runs.train_config(conf, refined)
    assert cfg.csa_epochs == 3 and cfg.csa_lr == 0.01 and cfg.rs_lambda == 10 and cfg.rs_tau == 0.2
    # a change the plain CSA run does not read leaves its blocks (the train job's params) unchanged
    before = runs.train_blocks(conf, plain)
    for key, value in (("lr", 0.5), ("epochs", 7), ("batch_size", 64), ("patience", 3)):
        conf["training"][key] = value
    conf["csa"]["epochs"] = 20
    conf["structure"]["warmup_epochs"] = 9
    assert runs.train_blocks(conf, plain) == before
    assert runs.train_blocks(conf, refined) != runs.train_blocks(params | {"csa": {"epochs": 3}}, refined)


def test_train_priority_starts_the_longest_groups_first(params: dict) -> None:
    """The scheduling hint orders groups by expected work: full pool > absolute sizes, R_S > none > CSA."""
    def spec(head: str, structure: dict | None, size: runs.Size) -> runs.RunSpec:
        return runs.RunSpec("v", "t", runs.Variant.make(head, "similar", structure), size, 1)

    rs = {"lambda": 10, "levels": 1, "tau": 0.05, "weighting": "none", "distance": "cosine"}
    full, small, tiny = runs.Size("frac", 1.0), runs.Size("n", 200), runs.Size("n", 50)
    cases = {"linear+rs full": ("linear", rs, full), "linear full": ("linear", None, full),
             "csa+rs full": ("csa", rs, full), "csa full": ("csa", None, full),
             "linear+rs n200": ("linear", rs, small), "linear+rs n50": ("linear", rs, tiny),
             "csa n50": ("csa", None, tiny)}
    prio = {name: runs.train_priority(params, spec(*case), 5) for name, case in cases.items()}
    assert all(isinstance(p, int) and 0 <= p <= 100 for p in prio.values()), prio
    assert sorted(prio, key=prio.__getitem__, reverse=True) == list(cases), prio
    # more hops and more seeds mean more work; the value never depends on anything a result depends on
    deeper = spec("linear", rs | {"levels": 3}, full)
    assert runs.train_priority(params, deeper, 5) > prio["linear+rs full"]
    assert runs.train_priority(params, spec("linear", rs, small), 1) < prio["linear+rs n200"]


def test_duplicate_variant_and_zero_lambda_are_rejected(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["methods"].append(dict(conf["methods"][0]))
    with pytest.raises(ValueError, match=r"methods\[\d+\]"):
        runs.variants(conf)
    conf = copy.deepcopy(params)
    conf["methods"] = [{"head": "linear", "layers": "last", "structure": {"lambda": 0}}]
    with pytest.raises(ValueError, match="structure: false"):
        runs.variants(conf)


@pytest.mark.parametrize("value, text", [(10, "10"), (10.0, "10"), (0.05, "0.05"), (1.0, "1"), (0.25, "0.25"),
                                         (1e-4, "0.0001")])
def test_fmt_value(value, text: str) -> None:
    assert runs.fmt_value(value) == text


def test_fmt_value_rejects_non_numbers() -> None:
    for bad in (float("nan"), True, "1"):
        with pytest.raises(ValueError):
            runs.fmt_value(bad)


def test_eval_and_grid_datasets_have_no_repeats(params: dict) -> None:
    assert runs.eval_datasets(params) == ["tuxpaint", "emoji", "gcompris_explore_title", "gcompris_explore_desc",
                                          "fashion_mnist", "gcompris_categorization", "art4apps"]
    assert runs.grid_datasets(params) == runs.eval_datasets(params)


def test_seeds_by_size_adds_seeds_at_listed_sizes_only(params: dict) -> None:
    conf = copy.deepcopy(params)
    conf["training"].update(sizes=[50, 200], fractions=[1.0], seeds=[1, 42],
                            seeds_by_size={50: [1, 42, 7, 8], "200": [1, 42, 9]})
    assert runs.seeds_for(conf, runs.Size("n", 50)) == [1, 42, 7, 8]
    assert runs.seeds_for(conf, runs.Size("n", 200)) == [1, 42, 9]  # digit-string keys (JSON, dvc -S) as well
    assert runs.seeds_for(conf, runs.Size("frac", 1.0)) == [1, 42]  # fractions keep training.seeds
    assert runs.extra_seed_sets(conf) == [((7, 8), [runs.Size("n", 50)]), ((9,), [runs.Size("n", 200)])]
    per_size = {}
    for spec in runs.run_specs(conf):
        per_size.setdefault((spec.variant.key, spec.size.component), []).append(spec.seed)
    for (_, size), seeds in per_size.items():
        assert seeds == {"n~50": [1, 42, 7, 8], "n~200": [1, 42, 9], "frac~1": [1, 42]}[size]
    # not a grid key of the job's params: adding seeds_by_size retrains no existing group
    spec = runs.run_specs(conf)[0]
    assert "seeds_by_size" not in runs.train_blocks(conf, spec)["training"]
    plain = copy.deepcopy(conf)
    plain["training"].pop("seeds_by_size")
    assert runs.train_blocks(plain, spec) == runs.train_blocks(conf, spec) and runs.extra_seed_sets(plain) == []
