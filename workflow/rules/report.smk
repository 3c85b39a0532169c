# aggregate: tables, scaling figure and DVC metrics from every run's metrics.json.


rule aggregate:
    input:
        metrics=run_files("metrics.json"),
        code=src_files("report", "tables", "figures", "claims", "stats", "runs"),
    output:
        report_outputs(),
    log:
        f"{RESULTS}/logs/aggregate.log",
    params:
        config=report_config(),
        results=RESULTS,
    shell:
        "python -m structure_align aggregate --metrics {input.metrics} --results-dir {params.results} "
        "--config {params.config:q} > {log} 2>&1"
