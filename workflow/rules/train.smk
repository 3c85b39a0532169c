# train -> evaluate: read cached features only. Everything that defines a result is in the run path
# (encoders, head, layer choice, lambda, levels, tau, fraction, seed); the remaining hyper-parameters go through
# params: so that Snakemake's params trigger sees them.

RUN = run_pattern()


rule train:
    input:
        vision=train_features("vision"),
        text=train_features("text"),
        manifests=train_manifests(),
        choice=f"{RESULTS}/layers/{{vision}}__{{text}}/choice.json",
        code=src_files("train", "heads", "csa", "losses", "regularizer", "features"),
    output:
        heads=f"{RUN}/heads.safetensors",
        info=f"{RUN}/train.json",
    log:
        f"{RUN}/train.log",
    benchmark:
        f"{RUN}/train.benchmark.tsv"
    threads: 1
    params:
        structure=structure_json,
        val_fraction=config["training"]["val_fraction"],
        val_seed=config["training"]["val_seed"],
        batch_size=config["training"]["batch_size"],
        epochs=config["training"]["epochs"],
        patience=config["training"]["patience"],
        lr=config["training"]["lr"],
        lr_finder=config["training"]["lr_finder"],
        weight_decay=config["training"]["weight_decay"],
        temperature=config["training"]["temperature"],
        dim=config["training"]["dim"],
        device=config["device"],
    shell:
        "python -m structure_align train --vision-features {input.vision} --text-features {input.text} "
        "--manifests {input.manifests} --choice {input.choice} --head {wildcards.head} "
        "--layers {wildcards.choice} --structure {params.structure:q} --fraction {wildcards.frac} "
        "--seed {wildcards.seed} --val-fraction {params.val_fraction} --val-seed {params.val_seed} "
        "--batch-size {params.batch_size} --epochs {params.epochs} --patience {params.patience} --lr {params.lr} "
        "--lr-finder {params.lr_finder} --weight-decay {params.weight_decay} --temperature {params.temperature} "
        "--dim {params.dim} --device {params.device} --threads {threads} "
        "--out {output.heads} --info-out {output.info} > {log} 2>&1"


rule evaluate:
    input:
        heads=f"{RUN}/heads.safetensors",
        info=f"{RUN}/train.json",
        vision=eval_features("vision"),
        text=eval_features("text"),
        manifests=eval_manifests(),
        code=src_files("evaluate", "heads", "csa", "features", "data"),
    output:
        f"{RUN}/metrics.json",
    log:
        f"{RUN}/evaluate.log",
    benchmark:
        f"{RUN}/evaluate.benchmark.tsv"
    threads: 1
    params:
        datasets=params_mod.eval_datasets(config),
        test_split=config["datasets"]["train"],
        duplicate_gallery=config["evaluation"]["duplicate_gallery"],
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    shell:
        "python -m structure_align evaluate --heads {input.heads} --info {input.info} "
        "--datasets {params.datasets} --vision-features {input.vision} --text-features {input.text} "
        "--manifests {input.manifests} --test-split-datasets {params.test_split} "
        "--duplicate-gallery {params.duplicate_gallery} --batch-size {params.batch_size} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"
