# train -> evaluate on cached features. One job per group = all seeds of one (encoder pair, variant, training
# size): the pool and the evaluation features are loaded once per job, and every run keeps its own directory
# <group>/seed~<s>/ (heads.safetensors, train.json, metrics.json). The path grammar is structure_align.runs.


rule train:
    input:
        vision=train_features("vision"),
        text=train_features("text"),
        manifests=train_manifests(),
        choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
        code=src_files(
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
            "data/manifest",
            "data/registry",
        ),
    output:
        heads=seed_files("heads.safetensors"),
        info=seed_files("train.json"),
    log:
        f"{GROUP}/train.log",
    benchmark:
        f"{GROUP}/train.benchmark.tsv"
    threads: 1
    priority: train_priority
    resources:
        mem_mb=mem_train,
        gpu=GPU,
    params:
        runs=group_runs,
        config=train_config,
        device=config["device"],
    shell:
        "python -m structure_align train --runs {params.runs} --vision-features {input.vision} "
        "--text-features {input.text} --manifests {input.manifests} --choice {input.choice} "
        "--config {params.config:q} --device {params.device} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        heads=seed_files("heads.safetensors"),
        info=seed_files("train.json"),
        vision=eval_features("vision"),
        text=eval_features("text"),
        manifests=eval_manifests(),
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
        seed_files("metrics.json"),
    log:
        f"{GROUP}/evaluate.log",
    benchmark:
        f"{GROUP}/evaluate.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=mem_evaluate,
        gpu=GPU,
    params:
        runs=group_runs,
        datasets=eval_records,
        config=json.dumps(config["evaluation"], sort_keys=True),
        device=config["device"],
    shell:
        "python -m structure_align evaluate --runs {params.runs} --datasets {params.datasets:q} "
        "--config {params.config:q} --device {params.device} --threads {threads} > {log} 2>&1"
