# The paper profile's extras (workflow/configs/paper*.yaml): reference rows evaluated without training (the CLIP
# joint space) and the paper table, ours beside the published numbers. Target `paper` = everything of `all` plus
# these; without params `references` / `paper_reference` it is the same as `all`. Path helpers: structure_align.reference.
from structure_align import reference


rule evaluate_reference:
    input:
        vision=eval_features("vision"),
        text=eval_features("text"),
        manifests=eval_manifests(),
        code=src_files("reference", "evaluate", "features", "reader", "pool", "data/manifest", "data/registry"),
    output:
        f"{RESULTS}/references/{{vision}}__{{text}}/metrics.json",
    log:
        f"{RESULTS}/logs/evaluate_reference/{{vision}}__{{text}}.log",
    threads: 1
    resources:
        mem_mb=mem_evaluate,
        gpu=GPU,
    params:
        datasets=eval_records,
        config=json.dumps(config["evaluation"], sort_keys=True),
        device=config["device"],
        label=lambda wc: reference.reference_entry(config, wc.vision, wc.text)["label"],
        vision=lambda wc: reference.reference_entry(config, wc.vision, wc.text)["vision"],
        text=lambda wc: reference.reference_entry(config, wc.vision, wc.text)["text"],
    shell:
        "python -m structure_align evaluate-reference --datasets {params.datasets:q} --config {params.config:q} "
        "--out {output} --label {params.label:q} --vision {params.vision:q} --text {params.text:q} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule paper_table:
    input:
        main=f"{RESULTS}/tables/main.csv",
        references=reference.reference_metrics_paths(config, RESULTS),
        paper=config.get("paper_reference") or [],
        code=src_files("reference", "tables"),
    output:
        csv=f"{RESULTS}/tables/paper.csv",
        md=f"{RESULTS}/tables/paper.md",
    log:
        f"{RESULTS}/logs/paper_table.log",
    resources:
        mem_mb=mem_small,
    params:
        # columns not run (paper.missing_local: skip) or run with other than the released prompts
        notes=json.dumps(placed.column_notes(config, NOT_PLACED), sort_keys=True),
    shell:
        "python -m structure_align paper-table --main {input.main} --references {input.references} "
        "--paper {input.paper} --notes {params.notes:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule paper:
    input:
        report_outputs(),
        heatmaps(),
        reference.reference_metrics_paths(config, RESULTS),
        reference.paper_outputs(config, RESULTS),
