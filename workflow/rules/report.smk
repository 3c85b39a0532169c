# aggregate: tables, scaling figure and DVC metrics from every run's metrics.json (+ train.json).


rule aggregate:
    input:
        metrics=run_metrics(),
        infos=run_train_infos(),
        code=src_files("report"),
    output:
        main_csv=f"{RESULTS}/tables/main.csv",
        main_md=f"{RESULTS}/tables/main.md",
        main_tex=f"{RESULTS}/tables/main.tex",
        scaling_csv=f"{RESULTS}/tables/scaling.csv",
        summary_csv=f"{RESULTS}/tables/scaling_summary.csv",
        scaling_png=f"{RESULTS}/figures/scaling.png",
        scaling_pdf=f"{RESULTS}/figures/scaling.pdf",
        metrics=f"{RESULTS}/metrics.json",
    log:
        f"{RESULTS}/logs/aggregate.log",
    params:
        variants=variant_specs(),
        retrieval=config["datasets"]["retrieval"],
        zeroshot=config["datasets"]["zeroshot"],
        summary=config["report"]["summary_metrics"],
    shell:
        "python -m structure_align aggregate --runs {input.metrics} --variants {params.variants:q} "
        "--retrieval {params.retrieval} --zeroshot {params.zeroshot} --summary-metrics {params.summary} "
        "--main-csv {output.main_csv} --main-md {output.main_md} --main-tex {output.main_tex} "
        "--scaling-csv {output.scaling_csv} --summary-csv {output.summary_csv} --scaling-png {output.scaling_png} --scaling-pdf {output.scaling_pdf} "
        "--metrics-out {output.metrics} > {log} 2>&1"
