# The analysis targets (docs/analysis.md): combinations, layer_correlation, ablations, in_domain, neighbourhood and
# `analysis` for all five. Each target trains (and evaluates) its own runs under results/analysis/<target>/ with the
# main run-path grammar, reusing the main grid's manifests, features and layer choices; its aggregation writes
# tables/analysis_<target>.* and figures/analysis_<target>.*. Which runs a target has is
# structure_align.analysis (params `analysis`); the rules below are generated per target.
import functools

from snakemake.io import report as mark_report

from structure_align import analysis as ana

ANALYSIS = config.get("analysis") or {}
_analysis_errors = ana.check_analysis(config)
if _analysis_errors:
    raise ValueError("invalid workflow parameters:\n  " + "\n  ".join(_analysis_errors))

ANALYSIS_CODE = ("steps", "runs", "pool", "train", "trainconfig", "heads", "csa", "losses", "regularizer",
                 "features", "neighbourhood", "indomain", "data/manifest", "data/registry")


def analysis_root_pattern(target):
    """Wildcard pattern of a target's results root (in_domain: one per pool and k)."""
    base = f"{RESULTS}/analysis/{target}"
    return f"{base}/{{pool}}/k~{{k}}" if target == "in_domain" else base


def analysis_group(target):
    return runs.group_pattern(analysis_root_pattern(target))


def analysis_seed_files(target, name):
    return expand(f"{analysis_group(target)}/seed~{{seed}}/{name}", seed=ana.seeds(config, target),
                  allow_missing=True)


def analysis_runs(target, wildcards):
    """The run directories of one group of a target, in seed order."""
    group = analysis_group(target).format(**wildcards)
    return [f"{group}/seed~{s}" for s in ana.seeds(config, target)]


def analysis_train_config(target, wildcards):
    """train step blocks (as train_config) plus the target's own block: neighbourhood k, in-domain pool."""
    blocks = {"training": config["training"], "structure": config["structure"]}
    if wildcards.head == "csa":
        blocks["csa"] = config.get("csa") or {}
    if target == "neighbourhood":
        blocks["neighbourhood"] = {"k": ANALYSIS["neighbourhood"]["k"]}
    if target == "in_domain" and int(wildcards.k) > 0:
        b = ANALYSIS["in_domain"]
        blocks["in_domain"] = {"k": int(wildcards.k), "template": b["template"],
                               "vision": feature_path(wildcards.pool, wildcards.vision),
                               "text": feature_path(wildcards.pool, wildcards.text),
                               "manifest": manifest_path(wildcards.pool), "test_manifest": manifest_path(b["dataset"])}
    return json.dumps(blocks, sort_keys=True)


def in_domain_inputs(wildcards):
    """Pool features and manifests of an in-domain run, and the evaluated set's manifest (disjointness check)."""
    if "k" not in wildcards.keys() or int(wildcards.k) == 0:
        return []
    dataset = ANALYSIS["in_domain"]["dataset"]
    return [feature_path(wildcards.pool, wildcards.vision), feature_path(wildcards.pool, wildcards.text),
            manifest_path(wildcards.pool), manifest_path(dataset)]


def analysis_run_files(target):
    name = "train.json" if target not in ana.EVALUATED else "metrics.json"
    return [f"{d}/{name}" for d in ana.run_dirs(config, target, RESULTS)]


def analysis_report_config(target):
    """What the aggregation of a target needs beside its run files (JSON)."""
    cfg = {"records": ana.variant_records(config, target), "retrieval": config["datasets"]["retrieval"],
           "zeroshot": config["datasets"]["zeroshot"], "summary_metrics": config["report"]["summary_metrics"]}
    if target == "layer_correlation":
        cfg["n_boot"] = ANALYSIS[target].get("n_boot", 2000)
        cfg["scores"] = {runs.pair_name(v, t): f"{RESULTS}/layers/{runs.pair_name(v, t)}/scores.csv"
                         for v, t in ana.pairs(config, target)}
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
            files.append(mark_report(path, caption=f"../report/analysis_{target}{suffix}.rst", category="Analysis", subcategory=target,
                                labels={"target": target, "file": Path(path).name}))
        else:
            files.append(path)
    return files


wildcard_constraints:
    pool=r"[a-z0-9][a-z0-9_.+-]*",
    k=r"[0-9]+",


def analysis_score_files(target):
    if target != "layer_correlation":
        return []
    return [f"{RESULTS}/layers/{runs.pair_name(v, t)}/scores.csv" for v, t in ana.pairs(config, target)]


for _target in ana.TARGETS if ANALYSIS else ():

    rule:
        name:
            f"analysis_train_{_target}"
        input:
            vision=train_features("vision"),
            text=train_features("text"),
            manifests=train_manifests(),
            choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
            in_domain=in_domain_inputs,
            code=src_files(*ANALYSIS_CODE),
        output:
            heads=analysis_seed_files(_target, "heads.safetensors"),
            info=analysis_seed_files(_target, "train.json"),
        log:
            f"{analysis_group(_target)}/train.log",
        benchmark:
            f"{analysis_group(_target)}/train.benchmark.tsv"
        threads: 1
        params:
            runs=functools.partial(analysis_runs, _target),
            config=functools.partial(analysis_train_config, _target),
            device=config["device"],
        shell:
            "python -m structure_align train --runs {params.runs} --vision-features {input.vision} "
            "--text-features {input.text} --manifests {input.manifests} --choice {input.choice} "
            "--config {params.config:q} --device {params.device} --threads {threads} > {log} 2>&1"

    if _target in ana.EVALUATED:

        rule:
            name:
                f"analysis_evaluate_{_target}"
            input:
                heads=analysis_seed_files(_target, "heads.safetensors"),
                info=analysis_seed_files(_target, "train.json"),
                vision=eval_features("vision"),
                text=eval_features("text"),
                manifests=eval_manifests(),
                code=src_files("steps", "runs", "evaluate", "heads", "csa", "features", "pool", "data/manifest",
                               "data/registry"),
            output:
                analysis_seed_files(_target, "metrics.json"),
            log:
                f"{analysis_group(_target)}/evaluate.log",
            benchmark:
                f"{analysis_group(_target)}/evaluate.benchmark.tsv"
            threads: 1
            params:
                runs=functools.partial(analysis_runs, _target),
                datasets=eval_records,
                config=json.dumps(config["evaluation"], sort_keys=True),
                device=config["device"],
            shell:
                "python -m structure_align evaluate --runs {params.runs} --datasets {params.datasets:q} "
                "--config {params.config:q} --device {params.device} --threads {threads} > {log} 2>&1"

    rule:
        name:
            f"analysis_aggregate_{_target}"
        input:
            runs=analysis_run_files(_target),
            scores=analysis_score_files(_target),
            code=src_files("analysis", "analysis_report", "analysis_tables", "analysis_figures", "correlation",
                           "stats", "tables", "figures", "runs"),
        output:
            analysis_report_outputs(_target),
        log:
            f"{RESULTS}/logs/analysis/{_target}.log",
        params:
            config=analysis_report_config(_target),
            results=RESULTS,
            target=_target,
        shell:
            "python -m structure_align analysis --target {params.target} --inputs {input.runs} "
            "--results-dir {params.results} --config {params.config:q} > {log} 2>&1"


rule combinations:
    input:
        analysis_outputs("combinations"),


rule layer_correlation:
    input:
        analysis_outputs("layer_correlation"),


rule ablations:
    input:
        analysis_outputs("ablations"),


rule in_domain:
    input:
        analysis_outputs("in_domain"),


rule neighbourhood:
    input:
        analysis_outputs("neighbourhood"),


rule analysis:
    input:
        [f for t in ana.TARGETS for f in analysis_outputs(t)],
