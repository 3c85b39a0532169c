"""Per-job memory (Snakemake ``resources: mem_mb``) computed from the inputs a job reads (docs/workflow.md "Memory").

Every rule that runs a job declares ``mem_mb`` through these functions, so that ``--resources mem_mb=<RAM>`` (the
local profile, Makefile) never starts more jobs than the machine holds and the Slurm profile asks for what a job
needs. The estimates follow what the steps actually read (docs/design.md "Memory"): a job's peak is

    OVERHEAD_MB + (bytes of the rows and layers it holds as float32) + (working memory of its computation)

with the feature shapes taken from the safetensors headers (a header read, no tensor) and row counts from the
manifest's parquet footer. At DAG-building time an input may not exist yet: the functions then raise
:class:`FileNotFoundError` naming it, which Snakemake turns into a "to be determined" value and evaluates again
when the job is ready to run (all inputs present). ``mem_mb`` is a runtime setting, never a result-defining
parameter: it changes how many jobs run at once, not what they write.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .io import FileFormatError, read_safetensors_header

Paths = str | os.PathLike | Iterable[str]

MB = 1 << 20
# a fresh `python -m structure_align <step>` process with torch, pandas and pyarrow imported: 587 MiB measured
# (ru_maxrss after the imports, this machine, 2026-12-05); the steps' peaks on near-empty inputs were 760-1010 MiB
# (benchmarks/bench_scale.py --scale 0.005), so 1 GiB covers the interpreter, libraries and small buffers
OVERHEAD_MB = 1024
# retrieval similarity blocks (evaluate.SIM_BLOCK_ELEMENTS float32) plus the masked copy and boolean masks
SIM_BLOCK_MB = 3 * (1 << 26) * 4 // MB
# bytes per manifest row held by pandas (sample id, path, caption list, split ...) and per text row of ``groups``
# (int64 + the Python int/dict entry of pool.first_caption_rows)
MANIFEST_ROW_BYTES = 1024
GROUP_ROW_BYTES = 128
# feature extraction keeps an output of at most features.MEMMAP_BYTES in RAM (larger ones are memory-mapped)
EXTRACT_OUTPUT_MB = 1024
# encoder weights in RAM during extraction (the hub checkpoints: docs/paper-profile.md "Memory and disk"); other
# encoders (the offline default's small models) are counted with DEFAULT_WEIGHTS_MB
WEIGHTS_MB = {"dinov2-vitg14": 4500, "dinov2-vitl14": 1200, "roberta-large": 1400, "clip": 1700}
DEFAULT_WEIGHTS_MB = 512


def _paths(paths: str | os.PathLike | Iterable[str]) -> list[str]:
    """One path or several (Snakemake passes a named input of one file as a string)."""
    return [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]


def _exists(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a missing file raises FileNotFoundError naming it (Snakemake: evaluate later)."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "input does not exist yet", str(path))
    return Path(path)


def feature_shape(path: str | os.PathLike) -> tuple[int, list[int]]:
    """``(rows, widths of every layer)`` of a feature file, from its header only."""
    header, _ = read_safetensors_header(_exists(path))
    layers = sorted(k for k in header if k.startswith("layer_"))
    if not layers:
        raise FileFormatError(f"{path}: no layer_* tensors in the header")
    return int(header[layers[0]]["shape"][0]), [int(header[k]["shape"][1]) for k in layers]


def manifest_rows(path: str | os.PathLike) -> int:
    """Rows of a manifest parquet, from its footer."""
    import pyarrow.parquet as pq

    path = Path(path)
    parquet = path if path.suffix == ".parquet" else path.with_name(path.name + ".parquet")
    return int(pq.read_metadata(_exists(parquet)).num_rows)


def _mb(nbytes: float) -> int:
    return int(-(-nbytes // MB))


def score_layers_mb(vision: Paths, text: Paths, manifests: Paths, n_samples: int) -> int:
    """score_layers (docs/method.md §3.2): ``n`` = min(n_samples, pool rows) scored rows of every layer, float32.

    ``OVERHEAD + manifests + groups + 3 x n x (sum d_vision + sum d_text) x 4 B`` (the read rows, their float copy
    in ``layer_scores`` and the centred copies / neighbour tables) ``+ 2 x n^2 x 4 B`` (one similarity matrix and
    its top-k workspace).
    """
    vision, text, manifests = _paths(vision), _paths(text), _paths(manifests)
    rows = sum(manifest_rows(m) for m in manifests)
    n = min(int(n_samples), rows)
    widths = sum(sum(feature_shape(p)[1]) for p in [*vision, *text])
    text_rows = sum(feature_shape(p)[0] for p in text)
    return OVERHEAD_MB + _mb(rows * MANIFEST_ROW_BYTES + text_rows * GROUP_ROW_BYTES + 3 * n * widths * 4
                             + 2 * n * n * 4)


def train_mb(vision: Paths, text: Paths, manifests: Paths, batch_size: int) -> int:
    """train (docs/method.md §6): one run at a time holds its training + validation rows at one layer pair.

    Those rows are at most every manifest row: ``R = sum rows``, ``D = max vision width + max text width``:
    ``OVERHEAD + manifests + groups + 2 x R x D x 4 B`` (the rows and the per-epoch shuffled copy)
    ``+ 16 x B^2 x 4 B`` (the batch similarity matrices of the contrastive and R_S losses with their gradients,
    ``B`` = training.batch_size).
    """
    vision, text, manifests = _paths(vision), _paths(text), _paths(manifests)
    rows = sum(manifest_rows(m) for m in manifests)
    width = max(max(feature_shape(p)[1]) for p in vision) + max(max(feature_shape(p)[1]) for p in text)
    text_rows = sum(feature_shape(p)[0] for p in text)
    b = int(batch_size)
    return OVERHEAD_MB + _mb(rows * MANIFEST_ROW_BYTES + text_rows * GROUP_ROW_BYTES + 2 * rows * width * 4
                             + 16 * b * b * 4)


def evaluate_mb(vision: Paths, text: Paths, manifests: Paths) -> int:
    """evaluate (docs/method.md §7): one evaluation set at a time, its rows at the run's layers, float32.

    Per set ``k``: ``2 x (images_k x d_vision + texts_k x d_text) x 4 B`` (the features and their embeddings, whose
    width is at most the input's), the largest set counts; plus the manifests, ``groups`` and the bounded
    similarity blocks (``SIM_BLOCK_MB``).
    """
    per_set = []
    for vp, tp in zip(_paths(vision), _paths(text), strict=True):
        n_img, dv = feature_shape(vp)
        n_txt, dt = feature_shape(tp)
        per_set.append(2 * (n_img * max(dv) + n_txt * max(dt)) * 4 + n_txt * GROUP_ROW_BYTES)
    rows = sum(manifest_rows(m) for m in _paths(manifests))
    return OVERHEAD_MB + SIM_BLOCK_MB + _mb(max(per_set, default=0) + rows * MANIFEST_ROW_BYTES)


def extract_mb(manifest: Paths, encoder: str) -> int:
    """extract_features: ``OVERHEAD + manifest + the encoder's weights + EXTRACT_OUTPUT_MB`` (outputs above
    1 GiB are not held in RAM, docs/encoders.md "Feature file")."""
    weights = next((mb for prefix, mb in WEIGHTS_MB.items() if encoder.startswith(prefix)), DEFAULT_WEIGHTS_MB)
    rows = sum(manifest_rows(m) for m in _paths(manifest))
    return OVERHEAD_MB + weights + EXTRACT_OUTPUT_MB + _mb(rows * MANIFEST_ROW_BYTES)


def small_job_mb(inputs: Paths = ()) -> int:
    """Jobs that hold small tables (aggregate, figures, paper table, analysis reports): ``OVERHEAD`` plus the size
    of their input files (each read whole at most once)."""
    total = 0
    for p in _paths(inputs):
        if not os.path.isdir(_exists(p)):
            total += os.path.getsize(p)
    return OVERHEAD_MB + _mb(total)


def manifest_mb(sources: Paths) -> int:
    """manifest: ``OVERHEAD`` plus twice the largest file of its sources (``resources/<source>/`` beside each
    ``SOURCE.json``, or a user dataset's folder / file): a builder reads one archive or binary at a time (CIFAR
    batches, the STL10 test binary) and holds it with its decoded copy; image files are opened one by one."""
    largest = 0
    for p in _paths(sources):
        root = Path(_exists(p))
        root = root.parent if root.name == "SOURCE.json" else root
        files = [root] if root.is_file() else (Path(d) / f for d, _, names in os.walk(root) for f in names)
        largest = max([largest, *(f.stat().st_size for f in files if f.is_file())])
    return OVERHEAD_MB + _mb(2 * largest)
