# Names and input functions of the analysis rules (workflow/rules/analysis.smk), kept in their own file so that
# no snakefile mixes rules and functions (snakemake --lint).
import functools
import os

from snakemake.io import report as mark_report

from structure_align import analysis as ana

ANALYSIS = config.get("analysis") or {}
_analysis_errors = ana.check_analysis(config)
if _analysis_errors:
    raise ValueError("invalid workflow parameters:\n  " + "\n  ".join(_analysis_errors))

ANALYSIS_CODE = (
    "steps",
    "runs",
    "pool",
    "train",
    "trainconfig",
    "heads",
    "csa",
    "losses",
    "regularizer",
    "features",
    "reader",
    "neighbourhood",
    "indomain",
    "data/manifest",
    "data/registry",
)


def analysis_root_pattern(target):
    """Wildcard pattern of a target's results root (in_domain: one per pool and k)."""
    base = f"{RESULTS}/analysis/{target}"
    return f"{base}/{{pool}}/k~{{k}}" if target == "in_domain" else base


def analysis_group(target):
    return runs.group_pattern(analysis_root_pattern(target))


def analysis_seed_files(target, name):
    return expand(
        f"{analysis_group(target)}/seed~{{seed}}/{name}",
        seed=ana.seeds(config, target),
        allow_missing=True,
    )


def analysis_runs(target, wildcards):
    """The run directories of one group of a target, in seed order."""
    group = analysis_group(target).format(**wildcards)
    return [f"{group}/seed~{s}" for s in ana.seeds(config, target)]


def analysis_train_priority(target, wildcards):
    """Longest train groups of a target first (runs.train_priority)."""
    run_dirs = analysis_runs(target, wildcards)
    return runs.train_priority(config, runs.RunSpec.from_path(run_dirs[0]), len(run_dirs))


def analysis_train_config(target, wildcards):
    """The main train step's blocks (common.smk train_config) plus the target's own: neighbourhood k, in-domain
    pool."""
    blocks = json.loads(train_config(wildcards))
    if target == "neighbourhood":
        blocks["neighbourhood"] = {"k": ANALYSIS["neighbourhood"]["k"]}
    if target == "in_domain" and int(wildcards.k) > 0:
        b = ANALYSIS["in_domain"]
        blocks["in_domain"] = {
            "k": int(wildcards.k),
            "template": b["template"],
            "vision": feature_path(wildcards.pool, wildcards.vision),
            "text": feature_path(wildcards.pool, wildcards.text),
            "manifest": manifest_path(wildcards.pool),
            "test_manifest": manifest_path(b["dataset"]),
        }
    return json.dumps(blocks, sort_keys=True)


def analysis_eval_datasets(target):
    """The main evaluation datasets, and for in_domain its evaluated set when the main grid does not have it."""
    names = runs.eval_datasets(config)
    if target == "in_domain" and ANALYSIS["in_domain"]["dataset"] not in names:
        names = [*names, ANALYSIS["in_domain"]["dataset"]]
    return names


def analysis_eval_features(target, modality):
    """Input function: evaluation features of one side of the pair for a target's evaluate job."""

    def inputs(wildcards):
        return [feature_path(d, getattr(wildcards, modality)) for d in analysis_eval_datasets(target)]

    return inputs


def analysis_eval_records(target, wildcards):
    """eval_records (common.smk) for a target's evaluation datasets."""
    train = set(config["datasets"]["train"])
    return json.dumps([{"name": d, "vision": feature_path(d, wildcards.vision), "text": feature_path(d, wildcards.text),
                        "manifest": manifest_path(d), "test_split": d in train} for d in analysis_eval_datasets(target)])


def in_domain_inputs(wildcards):
    """Pool features and manifests of an in-domain run, and the evaluated set's manifest (disjointness check)."""
    if "k" not in wildcards.keys() or int(wildcards.k) == 0:
        return []
    dataset = ANALYSIS["in_domain"]["dataset"]
    return [
        feature_path(wildcards.pool, wildcards.vision),
        feature_path(wildcards.pool, wildcards.text),
        manifest_path(wildcards.pool),
        manifest_path(dataset),
    ]


def analysis_run_files(target):
    name = "train.json" if target not in ana.EVALUATED else "metrics.json"
    return [f"{d}/{name}" for d in ana.run_dirs(config, target, RESULTS)]


def analysis_report_config(target):
    """What the aggregation of a target needs beside its run files (JSON)."""
    cfg = {
        "records": ana.variant_records(config, target),
        "retrieval": config["datasets"]["retrieval"],
        "zeroshot": config["datasets"]["zeroshot"],
        "summary_metrics": config["report"]["summary_metrics"],
    }
    if target == "layer_correlation":
        cfg["n_boot"] = ANALYSIS[target].get("n_boot", 2000)
        cfg["scores"] = {
            runs.pair_name(v, t): f"{RESULTS}/layers/{runs.pair_name(v, t)}/scores.csv"
            for v, t in ana.pairs(config, target)
        }
    if target == "in_domain":
        cfg["dataset"] = ANALYSIS[target]["dataset"]
    return json.dumps(cfg, sort_keys=True)


def analysis_outputs(target):
    return list(ana.output_files(target, RESULTS).values())


def analysis_report_outputs(target):
    """The aggregation's outputs; figures and csv tables marked for `snakemake --report` (captions in
    workflow/report/analysis_<target>*.rst)."""
    files = []
    for role, path in ana.output_files(target, RESULTS).items():
        if role in ("png", "csv", "rho_csv"):
            suffix = {"png": "", "csv": "_table", "rho_csv": "_rho_table"}[role]
            files.append(
                mark_report(
                    path,
                    caption=f"../report/analysis_{target}{suffix}.rst",
                    category="Analysis",
                    subcategory=target,
                    labels={"target": target, "file": Path(path).name},
                )
            )
        else:
            files.append(path)
    return files


def analysis_score_files(target):
    if target != "layer_correlation":
        return []
    return [
        f"{RESULTS}/layers/{runs.pair_name(v, t)}/scores.csv"
        for v, t in ana.pairs(config, target)
    ]


def existing_analysis_outputs():
    """The outputs of every analysis target whose files all exist: `make report` shows whichever targets ran."""
    return [
        f
        for t in ana.TARGETS
        if all(os.path.exists(p) for p in analysis_outputs(t))
        for f in analysis_outputs(t)
    ]
