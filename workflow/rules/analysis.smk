# The analysis targets (docs/analysis.md): combinations, layer_correlation, ablations, in_domain, neighbourhood and
# `analysis` for all five. Each target trains (and evaluates) its own runs under results/analysis/<target>/ with the
# main run-path grammar, reusing the main grid's manifests, features and layer choices; its aggregation writes
# tables/analysis_<target>.* and figures/analysis_<target>.*. Which runs a target has is
# structure_align.analysis (params `analysis`); the rules below are generated per target.
include: "analysis_common.smk"


wildcard_constraints:
    pool=r"[a-z0-9][a-z0-9_.+-]*",
    k=r"[0-9]+",


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
        priority: functools.partial(analysis_train_priority, _target)
        resources:
            mem_mb=mem_train,
            gpu=GPU,
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
                vision=analysis_eval_features(_target, "vision"),
                text=analysis_eval_features(_target, "text"),
                manifests=[manifest_path(d) for d in analysis_eval_datasets(_target)],
                code=src_files(
                    "steps",
                    "runs",
                    "evaluate",
                    "heads",
                    "csa",
                    "features",
                    "reader",
                    "pool",
                    "data/manifest",
                    "data/registry",
                ),
            output:
                analysis_seed_files(_target, "metrics.json"),
            log:
                f"{analysis_group(_target)}/evaluate.log",
            benchmark:
                f"{analysis_group(_target)}/evaluate.benchmark.tsv"
            threads: 1
            resources:
                mem_mb=mem_evaluate,
                gpu=GPU,
            params:
                runs=functools.partial(analysis_runs, _target),
                datasets=functools.partial(analysis_eval_records, _target),
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
            code=src_files(
                "analysis",
                "analysis_report",
                "analysis_tables",
                "analysis_figures",
                "correlation",
                "stats",
                "tables",
                "figures",
                "runs",
            ),
        output:
            analysis_report_outputs(_target),
        log:
            f"{RESULTS}/logs/analysis/{_target}.log",
        resources:
            mem_mb=mem_small,
        params:
            config=analysis_report_config(_target),
            # the results folder, from the first output (<results>/tables/...)
            results=lambda wildcards, output: str(Path(output[0]).parents[1]),
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


# the report's target (make report: snakemake --report results/report.html report_inputs): the default run's
# tables and figures, and the analysis targets that have been run
rule report_inputs:
    input:
        report_outputs(),
        heatmaps(),
        existing_analysis_outputs(),
