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


# training.seeds_by_size: the extra seeds of the sizes that run more (a superset of training.seeds) train and
# evaluate as one more job per group, beside the jobs above (same group directory, same params; only the seeds
# differ). One rule pair per distinct list of extra seeds (runs.extra_seed_sets), constrained to its sizes.
for _k, (_extra, _sizes) in enumerate(EXTRA_SEEDS):

    rule:
        name:
            f"train_extra_seeds_{_k}"
        input:
            vision=train_features("vision"),
            text=train_features("text"),
            manifests=train_manifests(),
            choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
            code=rules.train.input.code,
        output:
            heads=seed_files("heads.safetensors", _extra),
            info=seed_files("train.json", _extra),
        wildcard_constraints:
            size=extra_size_constraint(_sizes),
        log:
            f"{GROUP}/train_extra_seeds.log",
        benchmark:
            f"{GROUP}/train_extra_seeds.benchmark.tsv"
        threads: 1
        priority: functools.partial(train_priority, seeds=_extra)
        resources:
            mem_mb=mem_train,
            gpu=GPU,
        params:
            runs=functools.partial(group_runs, seeds=_extra),
            config=train_config,
            device=config["device"],
        shell:
            rules.train.rule.shellcmd

    rule:
        name:
            f"evaluate_extra_seeds_{_k}"
        input:
            heads=seed_files("heads.safetensors", _extra),
            info=seed_files("train.json", _extra),
            vision=eval_features("vision"),
            text=eval_features("text"),
            manifests=eval_manifests(),
            code=rules.evaluate.input.code,
        output:
            seed_files("metrics.json", _extra),
        wildcard_constraints:
            size=extra_size_constraint(_sizes),
        log:
            f"{GROUP}/evaluate_extra_seeds.log",
        benchmark:
            f"{GROUP}/evaluate_extra_seeds.benchmark.tsv"
        threads: 1
        resources:
            mem_mb=mem_evaluate,
            gpu=GPU,
        params:
            runs=functools.partial(group_runs, seeds=_extra),
            datasets=eval_records,
            config=json.dumps(config["evaluation"], sort_keys=True),
            device=config["device"],
        shell:
            rules.evaluate.rule.shellcmd
