"""benchmarks/gpu_check.py --dry: the GPU check's code paths (extraction of the three paper architectures at tiny
size, bare forwards, the R_S training step at L = 1 and 3, the smoke workflow plan with device cuda) run on CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_runs_every_part(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_check.json"
    module.main(["--dry", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["dry"] is True and report["extraction_options"]["precision"] == "released"
    # 8 images (ViT-L), 4 (ViT-g, half), 5 captions per image (RoBERTa): every row went through extract_features
    rows = {k: v["rows"] for k, v in {**report["vision"], **report["text"]}.items()}
    assert rows == {"vitl14": 8, "vitg14": 4, "roberta_large": 40}
    for part in (*report["vision"].values(), *report["text"].values()):
        assert part["bare_forward"]["rows"] == part["rows"] and part["throughput_ratio_to_bare"] > 0
    assert [s["levels"] for s in report["train_step"]] == [1, 3]
    assert report["smoke_workflow"]["returncode"] == 0 and report["smoke_workflow"]["command"].endswith("-n")
