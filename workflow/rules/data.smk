# acquire -> manifest. Sources land in resources/ (shared by every config); manifests under the results folder.
# No conda:/container: directives: the project is one pinned Python environment (Makefile `install`), see
# docs/workflow.md "Software environment"; the linter's suggestion to add them is a conscious omission.


# url sources: downloads are resumable, so a retry continues an interrupted transfer. The mirror travels as a
# resource, not a param: where the (checksum-pinned) bytes come from must not rerun acquisition.
rule acquire:
    input:
        code=src_files("data/acquire", "data/download", wrapper=False),
    output:
        "resources/{source}/SOURCE.json",
    log:
        f"{RESULTS}/logs/acquire/{{source}}.log",
    retries: 2
    resources:
        mirror=DOWNLOADS.get("mirror") or "",
        # per-source locations (downloads.urls): like the mirror, where the pinned bytes come from is no rerun cause
        urls=json.dumps(DOWNLOADS.get("urls") or {}, sort_keys=True),
        # downloads and unpacking stream in bounded chunks: the interpreter's own memory
        mem_mb=resources_mod.OVERHEAD_MB,
    params:
        pin=source_pin,
        downloads=source_downloads,
    shell:
        "python -m structure_align acquire --source {wildcards.source} --resources-dir resources "
        "--mirror={resources.mirror:q} --urls {resources.urls:q} --downloads {params.downloads:q} > {log} 2>&1"


rule manifest:
    input:
        sources=manifest_inputs,
        code=src_files("data", wrapper=False),
    output:
        parquet=f"{RESULTS}/manifests/{{dataset}}.parquet",
        info=f"{RESULTS}/manifests/{{dataset}}.json",
    log:
        f"{RESULTS}/logs/manifest/{{dataset}}.log",
    resources:
        mem_mb=mem_manifest,
    params:
        config=manifest_config,
        images=f"{RESULTS}/images",
        # the released class names / templates (package data) of a paper zero-shot set: a changed list rebuilds it
        prompts=lambda wc: released_prompts.rule_token(wc.dataset),
    shell:
        "python -m structure_align manifest --dataset {wildcards.dataset} --resources-dir resources "
        "--images-dir {params.images} --config {params.config:q} --out {output.parquet} > {log} 2>&1"


# acquisition only (make pull runs it before `snakemake --touch`, so that pulled outputs stay up to date)
rule sources:
    input:
        grid_sources(),
