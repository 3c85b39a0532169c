# aggregate: tables, scaling figure and DVC metrics from every run's metrics.json. The main table and the scaling
# figure are marked for `snakemake --report` (make report; captions in workflow/report/).
rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        code=src_files("report", "tables", "figures", "claims", "stats", "runs"),
        paper_effects=paper_effects_file(),
        manifests=manifest_infos(),
    output:
        marked_report_outputs(),
    log:
        f"{RESULTS}/logs/aggregate.log",
    resources:
        mem_mb=mem_small,
    params:
        config=report_config(),
        # the results folder, from the first output (<results>/tables/...)
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    shell:
        "python -m structure_align aggregate --metrics {input.metrics} --results-dir {params.results} "
        "--config {params.config:q} > {log} 2>&1"
