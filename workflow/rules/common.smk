# Loads and validates the parameters, and holds the small input functions the rules share. Every fact lives in the
# package: the run-path grammar and its wildcard constraints (structure_align.runs), the head list (heads.HEADS),
# dataset sources (structure_align.data), what aggregation writes (report.output_files).
import functools
import json
import re
import sys
from pathlib import Path

from snakemake.io import report as mark_report

from structure_align import config as params_mod, report, runs
from structure_align import resources as resources_mod
from structure_align.data import SOURCES
from structure_align.data.acquire import pinned_spec
from structure_align.data import placed, prompts as released_prompts

# clear, key-naming errors before anything is planned
params_mod.check_params(config)

RESULTS = config["results_dir"]
SRC = "src/structure_align"
DATASETS = params_mod.dataset_specs(config)
# paper.missing_local: skip leaves unplaced hand-placed evaluation sets out of the plan (the paper table says so)
NOT_PLACED = placed.skip_missing_local(config, DATASETS, "resources")
for _dataset, _note in NOT_PLACED.items():
    print(f"paper.missing_local: skip: {_dataset} is not run: {_note}", file=sys.stderr)
USER_DATASETS = config.get("user_datasets") or {}
GROUP = runs.group_pattern(RESULTS)
SEEDS = [int(s) for s in config["training"]["seeds"]]
# sizes that run more seeds (training.seeds_by_size): [(extra seeds, sizes), ...], one extra job per group each
EXTRA_SEEDS = runs.extra_seed_sets(config)


wildcard_constraints:
    **runs.WILDCARDS,
    dataset=r"[a-z0-9][a-z0-9_.+-]*",
    source=r"[a-z0-9][a-z0-9_.+-]*",
    encoder=runs.WILDCARDS["vision"],


def src_files(*names, wrapper=True):
    """Package modules a rule depends on (Snakemake's code trigger does not follow imports).

    ``wrapper=False`` leaves out the CLI/config wrappers, so that editing cli.py does not re-extract every feature
    file (force that with `snakemake -R extract_features` after changing the extract step itself).
    """
    files = [f"{SRC}/utils.py", f"{SRC}/io.py"]
    if wrapper:
        files += [f"{SRC}/cli.py", f"{SRC}/config.py", f"{SRC}/params.schema.yaml"]
    for name in names:
        path = Path(SRC) / name
        files += (
            sorted(map(str, path.rglob("*.py")))
            if path.is_dir()
            else [f"{SRC}/{name}.py"]
        )
    return sorted(set(files))


def manifest_path(dataset):
    return f"{RESULTS}/manifests/{dataset}.parquet"


def feature_path(dataset, slug):
    """Feature file of a dataset and an encoder slug (runs.encoder_slug: the slash of a hub id becomes '--')."""
    return f"{RESULTS}/features/{dataset}/{slug}.safetensors"


def encoder_of(wildcards):
    """The registry name of the {encoder} wildcard (a slug)."""
    return runs.encoder_name(wildcards.encoder)


def extraction_config():
    """params ``extraction`` as canonical JSON, plus ``hub_revisions`` (params ``encoders.revisions``, for the hub
    encoders' loaders; docs/encoders.md "Hub revisions") only when some are set, so that a config without revisions
    gives the same params (and reruns nothing) as before the key existed."""
    block = dict(config["extraction"])
    revisions = config["encoders"].get("revisions") or {}
    if revisions:
        block["hub_revisions"] = revisions
    return json.dumps(block, sort_keys=True)


DOWNLOADS = config.get("downloads") or {}


def source_pin(wildcards):
    """The pinned package and checksums of a source (with params downloads.overrides): a changed pin reruns
    acquisition (params trigger). The mirror is not part of it (same bytes, wherever they come from)."""
    return pinned_spec(wildcards.source, DOWNLOADS).pin


def source_downloads(wildcards):
    """params ``downloads.overrides`` of this source only, as canonical JSON."""
    overrides = (DOWNLOADS.get("overrides") or {}).get(wildcards.source) or {}
    return json.dumps({"overrides": {wildcards.source: overrides}}, sort_keys=True)


def grid_sources():
    """SOURCE.json of every source the main grid's datasets read (the `sources` target)."""
    names = dict.fromkeys(
        s for d in runs.grid_datasets(config) for s in DATASETS[d].sources
    )
    return [f"resources/{name}/SOURCE.json" for name in names]


def manifest_inputs(wildcards):
    """What a manifest is built from: the acquired sources, or a user dataset's declared folder / file."""
    decl = USER_DATASETS.get(wildcards.dataset)
    if decl is not None:
        return [
            decl[k]
            for k in ("root", "file", "image_root", "classnames_file")
            if decl.get(k)
        ]
    return [f"resources/{s}/SOURCE.json" for s in DATASETS[wildcards.dataset].sources]


def manifest_config(wildcards):
    """Builder options (+ the declaration of a user dataset, params ``images`` of the pre-flight check) as
    canonical JSON (stable for the params trigger)."""
    return json.dumps(
        {
            "options": config["manifest"].get(wildcards.dataset, {}),
            "declaration": USER_DATASETS.get(wildcards.dataset),
            "images": config.get("images") or {},
        },
        sort_keys=True,
    )


def grid_features():
    """Feature files the main grid needs: each dataset with each vision and each text encoder of the pairs."""
    encoders = runs.unique(config["encoders"]["vision"] + config["encoders"]["text"])
    return [
        feature_path(d, runs.encoder_slug(e))
        for d in runs.grid_datasets(config)
        for e in encoders
    ]


def all_features():
    """Feature files of the features_all target: every listed encoder on every dataset of datasets.all."""
    encoders = runs.unique(
        config["encoders"]["all_vision"] + config["encoders"]["all_text"]
    )
    return [
        feature_path(d, runs.encoder_slug(e))
        for d in config["datasets"]["all"]
        for e in encoders
    ]


def train_features(modality):
    """Input function: training-pool features of one side of the pair, in datasets.train order."""

    def inputs(wildcards):
        return [
            feature_path(d, getattr(wildcards, modality))
            for d in config["datasets"]["train"]
        ]

    return inputs


def eval_features(modality):
    """Input function: evaluation features of one side of the pair, in evaluation order."""

    def inputs(wildcards):
        return [
            feature_path(d, getattr(wildcards, modality))
            for d in runs.eval_datasets(config)
        ]

    return inputs


def train_manifests():
    return [manifest_path(d) for d in config["datasets"]["train"]]


def eval_manifests():
    return [manifest_path(d) for d in runs.eval_datasets(config)]


def seed_files(name, seeds=None):
    """The per-seed files of one group (a pair, variant and training size) for ``seeds`` (default training.seeds)."""
    return expand(f"{GROUP}/seed~{{seed}}/{name}", seed=SEEDS if seeds is None else seeds, allow_missing=True)


def group_runs(wildcards, seeds=None):
    """The run directories of one group for ``seeds`` (default training.seeds), in seed order."""
    return [f"{GROUP.format(**wildcards)}/seed~{s}" for s in (SEEDS if seeds is None else seeds)]


def extra_size_constraint(sizes):
    """Wildcard constraint of the {size} of an extra-seeds rule: exactly these sizes (e.g. n~50|n~200)."""
    return "|".join(re.escape(s.component) for s in sizes)


def train_config(wildcards):
    """The params blocks a train job reads beyond its paths, as canonical JSON (runs.train_blocks: no grid or
    path keys, so that a new lambda or fraction trains only the new runs)."""
    spec = runs.RunSpec.from_path(group_runs(wildcards)[0])
    return json.dumps(runs.train_blocks(config, spec), sort_keys=True)


def train_priority(wildcards, seeds=None):
    """Longest train groups first (runs.train_priority: a scheduling hint, never result-defining)."""
    run_dirs = group_runs(wildcards, seeds)
    return runs.train_priority(config, runs.RunSpec.from_path(run_dirs[0]), len(run_dirs))


def eval_records(wildcards):
    """Evaluation datasets as JSON records (feature files, manifest, test split only for training datasets)."""
    train = set(config["datasets"]["train"])
    return json.dumps(
        [
            {
                "name": d,
                "vision": feature_path(d, wildcards.vision),
                "text": feature_path(d, wildcards.text),
                "manifest": manifest_path(d),
                "test_split": d in train,
            }
            for d in runs.eval_datasets(config)
        ]
    )


def run_files(name):
    return [f"{d}/{name}" for d in runs.run_dirs(config, RESULTS)]


def report_outputs():
    return list(report.output_files(RESULTS).values())


def report_config():
    """Table rows (label + path values, params order), datasets and summary metrics for the aggregation."""
    variants = [{"label": v.label, **v.values()} for v in runs.variants(config)]
    d, t = config["datasets"], config["training"]
    condition = (
        f"trained on {'+'.join(d['train'])}; zero-shot on {', '.join(d['zeroshot'])}; retrieval on "
        f"{', '.join(d['retrieval'])}; selection on {t.get('select_on', 'total')}"
        f"{' after the warm-up' if t.get('select_after_warmup') else ''}"
    )
    return json.dumps(
        {
            "variants": variants,
            "retrieval": d["retrieval"],
            "zeroshot": d["zeroshot"],
            "summary_metrics": config["report"]["summary_metrics"],
            "condition": condition,
            "target_effect": float(config["report"].get("target_effect", 1.0)),
            "paper_effects": config["report"].get("paper_effects"),
            "manifests": manifest_infos(),
        }
    )


def manifest_infos():
    """The info JSONs of the main grid's datasets (skipped images are named under the claims table)."""
    return [f"{RESULTS}/manifests/{d}.json" for d in runs.grid_datasets(config)]


def paper_effects_file():
    """params ``report.paper_effects`` as an input of the aggregation (a new paper table re-aggregates)."""
    path = config["report"].get("paper_effects")
    return [path] if path else []


def heatmaps():
    return [f"{RESULTS}/figures/layers_{runs.pair_name(v, t)}.{ext}" for v, t in runs.encoder_pairs(config)
            for ext in ("png", "pdf")]


# outputs marked for `snakemake --report` (make report); the captions are workflow/report/*.rst
MAIN_CAPTIONS = {"main_csv": "main_table", "scaling_png": "scaling", "summary_csv": "scaling_summary"}


def marked_report_outputs():
    """report_outputs() with the main table, the scaling figure and its data marked for the HTML report."""
    out = []
    for role, path in report.output_files(RESULTS).items():
        if role in MAIN_CAPTIONS:
            out.append(mark_report(path, caption=f"../report/{MAIN_CAPTIONS[role]}.rst", category="Main results",
                                   labels={"file": Path(path).name}))
        else:
            out.append(path)
    return out


# the layer heatmap's PNG (layers.smk), marked for the report
HEATMAP_PNG = mark_report(f"{RESULTS}/figures/layers_{{vision}}__{{text}}.png", caption="../report/heatmap.rst",
                          category="Layer selection", labels={"pair": "{vision} x {text}"})


# ----- per-job memory (structure_align.resources; docs/workflow.md "Memory"): computed from the headers and row
# counts of the inputs a job reads; an input that does not exist yet at planning is re-evaluated when the job is ready
GPU = 1 if str(config["device"]).startswith("cuda") else 0


def mem_score_layers(wildcards, input):
    return resources_mod.score_layers_mb(input.vision, input.text, input.manifests, config["layers"]["n_samples"])


def mem_train(wildcards, input):
    return resources_mod.train_mb(input.vision, input.text, input.manifests, config["training"]["batch_size"])


def mem_evaluate(wildcards, input):
    return resources_mod.evaluate_mb(input.vision, input.text, input.manifests)


def mem_extract(wildcards, input):
    return resources_mod.extract_mb(input.manifest, encoder_of(wildcards))


def mem_manifest(wildcards, input):
    return resources_mod.manifest_mb(input.sources)


def mem_small(wildcards, input):
    return resources_mod.small_job_mb(input)
