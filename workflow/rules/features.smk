# extract_features: one job per (dataset, encoder), all layers in one pass (docs/encoders.md "Feature file").


rule extract_features:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.parquet",
        code=src_files("extract", "features", "encoders", "data", wrapper=False),
    output:
        f"{RESULTS}/features/{{dataset}}/{{encoder}}.safetensors",
    log:
        f"{RESULTS}/logs/extract_features/{{dataset}}/{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{dataset}}/{{encoder}}.tsv"
    threads: 2
    resources:
        gpu=GPU,
        mem_mb=mem_extract,
    params:
        config=extraction_config(),
        device=config["device"],
        encoder=encoder_of,
    shell:
        "python -m structure_align extract --manifest {input.manifest} --encoder {params.encoder:q} "
        "--out {output} --config {params.config:q} --device {params.device} --threads {threads} > {log} 2>&1"


# the features of the main grid (the DVC `features` stage)
rule features:
    input:
        grid_features(),


# every offline encoder on every offline dataset (make features-all)
rule features_all:
    input:
        all_features(),
