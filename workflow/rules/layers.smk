# score_layers: mutual kNN of every (vision layer, text layer) pair on the training pool (docs/method.md §3);
# the chosen pairs ("last", "similar") go to choice.json, which every train job of the pair reads. The heatmap is
# marked for `snakemake --report` (make report).


rule score_layers:
    input:
        vision=train_features("vision"),
        text=train_features("text"),
        manifests=train_manifests(),
        code=src_files("steps", "similarity", "pool", "features", "reader", "tables", "data"),
    output:
        scores=f"{RESULTS}/layers/{{vision}}__{{text}}/scores.csv",
        choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
    log:
        f"{RESULTS}/logs/score_layers/{{vision}}__{{text}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_layers/{{vision}}__{{text}}.tsv"
    threads: 2
    resources:
        mem_mb=mem_score_layers,
    params:
        config=json.dumps({"layers": config["layers"], "val_fraction": config["training"]["val_fraction"],
                           "val_seed": config["training"]["val_seed"],
                           **({"val_split": config["training"]["val_split"]}
                              if "val_split" in config["training"] else {})}, sort_keys=True),
    shell:
        "python -m structure_align score-layers --vision-features {input.vision} --text-features {input.text} "
        "--manifests {input.manifests} --config {params.config:q} --threads {threads} "
        "--scores-out {output.scores} --choice-out {output.choice} > {log} 2>&1"


rule layer_heatmap:
    input:
        scores=f"{RESULTS}/layers/{{vision}}__{{text}}/scores.csv",
        choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
        code=src_files("figures", "tables"),
    output:
        png=HEATMAP_PNG,
        pdf=f"{RESULTS}/figures/layers_{{vision}}__{{text}}.pdf",
    log:
        f"{RESULTS}/logs/layer_heatmap/{{vision}}__{{text}}.log",
    resources:
        mem_mb=mem_small,
    shell:
        "python -m structure_align heatmap --scores {input.scores} --choice {input.choice} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"
