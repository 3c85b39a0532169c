# STRUCTURE reproduction workflow (thin entry point; rules live in workflow/rules/, logic in src/structure_align/).
# Run from the repository root with the project venv on PATH, e.g. `make reproduce` or
#   snakemake --cores all --workflow-profile workflow/profiles/default
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# front page of `snakemake --report` (make report)
report: "workflow/report/workflow.rst"


# validates params (schema + registry names, key-naming messages) before any job is planned
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/layers.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
        heatmaps(),
        # the runs themselves, not only the tables aggregated from them: where Snakemake has no record of the last
        # aggregation (.snakemake/metadata: a fresh clone after `make pull`, a DVC experiment), a new run that the
        # tables need is otherwise not planned, because the existing tables look up to date
        run_files("metrics.json"),
