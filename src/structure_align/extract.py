"""Feature extraction: one pass of one encoder over one dataset into a feature file (docs/method.md §2; docs/encoders.md
"Feature file", "Extraction at scale"). The file format and the readers live in :mod:`structure_align.features`.

Memory and disk are bounded whatever the dataset size:

* encoders pool every block's output as it is produced (:mod:`structure_align.encoders.blocks`), so GPU memory holds
  one block's activations, not all of them;
* pooled rows go straight into the output file at their final offsets (:class:`~structure_align.io.
  SafetensorsFileWriter`: header reserved, rows written in place through memory maps, checksums computed by
  re-reading in bounded chunks): no full-size scratch copy, no output held in RAM;
* ``/dev/shm`` is checked before DataLoader workers start (:func:`shm_workers`).

Resume (docs/encoders.md "Resume"): the file fills ``<out>.partial`` with a side file ``<out>.progress.json`` (rows
done, chunk size, a digest of encoder, manifest, options and row order). Every ``chunk_batches`` batches the rows
are flushed and the progress is written; a killed or failed run leaves both behind (Snakemake deletes only declared
outputs), and a rerun with the same digest continues after the last completed chunk. Batches are independent, so the
result is byte-identical to an uninterrupted run. A digest mismatch discards the stale partial.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .features import FORMAT_VERSION, layer_key
from .io import SafetensorsFileWriter, read_json, write_json
from .utils import resolve_device

log = logging.getLogger(__name__)

NP_DTYPES = {"float32": np.float32, "float16": np.float16}
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# released: vision encoder in float32, text encoder with bfloat16 weights (the released code); autocast: float32
# weights, forwards under extraction.autocast
PRECISIONS = ("autocast", "released")
# training sets: text rows of the caption training uses (the first of each train row), or every caption
TRAIN_CAPTIONS = ("used", "all")
DEFAULT_CHUNK_BATCHES = 16
PREFETCH_FACTOR = 2
SHM_PATH = "/dev/shm"


def open_image(path: str) -> Image.Image:
    """The one image opener of extraction (RGB, transparency composited on white by :func:`data.images.open_rgb`,
    the opener every source uses); every decode goes through here."""
    from .data.images import open_rgb

    return open_rgb(path)


class _ImageBatches(torch.utils.data.Dataset):
    """Batch ``k`` = decoded + preprocessed images of ``batches[k]`` (a Dataset so DataLoader workers can run it)."""

    def __init__(self, paths: Sequence[str], batches: Sequence[np.ndarray], preprocess: Callable) -> None:
        self.paths, self.batches, self.preprocess = list(paths), list(batches), preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.preprocess([open_image(self.paths[i]) for i in self.batches[k]])


def _prefetched(load: Callable[[int], Any], n: int) -> Iterator[Any]:
    """Yield ``load(0..n-1)`` while a background thread already prepares the next one (decode/compute overlap)."""
    if n == 0:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future = pool.submit(load, 0)
        for k in range(n):
            current = future.result()
            if k + 1 < n:
                future = pool.submit(load, k + 1)
            yield current


def shm_workers(num_workers: int, batch_bytes: int, shm_path: str = SHM_PATH) -> int:
    """DataLoader workers that fit ``/dev/shm``: each keeps ``PREFETCH_FACTOR`` preprocessed batches there.

    Needed = workers x prefetch x ``batch_bytes`` (B x 3 x H x W x 4). When short, fall back to as many workers as
    fit (0 = the prefetch thread, which needs no shared memory) and log how much the asked number would need; a
    missing ``/dev/shm`` (not Linux) keeps ``num_workers``.
    """
    if num_workers <= 0:
        return 0
    try:
        free = shutil.disk_usage(shm_path).free
    except OSError:
        return num_workers
    need = num_workers * PREFETCH_FACTOR * batch_bytes
    if need <= free:
        return num_workers
    fits = int(free // (PREFETCH_FACTOR * batch_bytes))
    log.warning("%s has %.1f MB free, %d decoding workers x prefetch %d x %.1f MB batches need %.1f MB: using %d "
                "workers%s (enlarge it, e.g. docker --shm-size=%dg, to use all)", shm_path, free / 2**20, num_workers,
                PREFETCH_FACTOR, batch_bytes / 2**20, need / 2**20, fits, " (one prefetch thread)" if not fits else "",
                -(-need // 2**30))
    return min(fits, num_workers)


def _batch_stream(source: _ImageBatches | Callable[[int], Any], n: int, num_workers: int,
                  pin: bool) -> Iterator[Any]:
    """Preprocessed batches in order: DataLoader workers when ``num_workers > 0``, else one prefetch thread."""
    if num_workers > 0 and isinstance(source, _ImageBatches):
        loader = torch.utils.data.DataLoader(source, batch_size=None, shuffle=False, num_workers=num_workers,
                                             pin_memory=pin, prefetch_factor=PREFETCH_FACTOR,
                                             persistent_workers=False)
        yield from loader
    else:
        load = source.__getitem__ if isinstance(source, _ImageBatches) else source
        yield from _prefetched(load, n)


def _resolve_image_paths(df: Any, manifest_path: Path) -> list[str]:
    """Manifest ``image_path`` values (relative to the working directory, or absolute); all must exist."""
    paths = [str(p) for p in df["image_path"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{manifest_path}: {len(missing)} of {len(paths)} image_path entries do not exist "
                                f"(relative paths resolve against {os.getcwd()}), first: {missing[:3]}")
    return paths


def _split_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def extraction_texts(df: Any, info: Any, train_captions: str = "used") -> tuple[list[str], np.ndarray]:
    """The text rows to embed: :func:`~structure_align.data.dataset_texts`, minus, for a training set (task
    ``pairs``) with ``train_captions = used``, every caption of a ``train`` row but its first (the one training
    pairs with, :func:`structure_align.pool.first_caption_rows`). ``test`` rows keep all captions (retrieval);
    ``groups`` still maps each kept text to its manifest row, so the pool and evaluation code read it unchanged."""
    from .data import dataset_texts

    if train_captions not in TRAIN_CAPTIONS:
        raise ValueError(f"train_captions must be one of {TRAIN_CAPTIONS}, got {train_captions!r}")
    texts, groups = dataset_texts(df, info)
    if info.task != "pairs" or train_captions == "all" or "split" not in df:
        return texts, groups
    is_train = (df["split"].to_numpy() == "train")[groups]
    first = np.ones(len(groups), dtype=bool)
    first[1:] = groups[1:] != groups[:-1]  # dataset_texts lists a row's captions together, in caption order
    keep = np.flatnonzero(~is_train | first)
    return [texts[i] for i in keep], groups[keep]


def check_options(*, batch_size: int, dtype: str, limit: int | None, num_workers: int, autocast: str,
                  precision: str, chunk_batches: int) -> None:
    """Refuse bad extraction options before anything is loaded (``ValueError`` naming the option and value)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype not in NP_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(NP_DTYPES)}, got {dtype!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST)}, got {autocast!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "released" and autocast != "none":
        raise ValueError(f"precision 'released' fixes the forward dtypes (vision float32, text bfloat16 weights); "
                         f"autocast must be 'none', got {autocast!r}")
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")


def apply_precision(encoder: Any, precision: str) -> None:
    """In place. ``released``: text encoders get bfloat16 weights (the released code's RoBERTa), vision encoders stay float32,
    and so do the CLIP reference towers (pooling ``clip_projection``: not part of the released STRUCTURE pipeline);
    ``autocast``: weights stay float32 (the forwards may run under ``torch.autocast``)."""
    if precision == "released" and encoder.modality == "text" and encoder.pooling != "clip_projection":
        encoder.model.to(torch.bfloat16)


def _weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the first and last parameter tensors: tells a different checkpoint under the same name apart."""
    params = list(model.parameters())
    digest = hashlib.sha256()
    for p in (params[:1] + params[-1:]) if params else []:
        digest.update(p.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _metadata(encoder: Any, info: Any, dtype: str, n: int, limit: int | None, options: dict[str, str]) -> dict:
    """Feature-file metadata (docs/encoders.md "Feature file"); no timestamps, so same inputs = same bytes."""
    return {
        "format_version": FORMAT_VERSION, "encoder": encoder.name, "modality": encoder.modality,
        "layer_names": json.dumps(list(encoder.layer_names)), "pooling": encoder.pooling, "dataset": info.name,
        "manifest_sha256": info.manifest_sha256, "dtype": dtype, "n_rows": str(n),
        "n_layers": str(len(encoder.embed_dims)), "embed_dims": json.dumps([int(d) for d in encoder.embed_dims]),
        "encoder_description": encoder.description, "limit": "" if limit is None else str(limit), **options,
    }


class _Progress:
    """``<out>.progress.json``: batches done of the partial file ``<out>.partial`` and the digest they belong to."""

    def __init__(self, out_path: Path, digest: str, n_batches: int, chunk_batches: int) -> None:
        self.path = out_path.with_name(out_path.name + ".progress.json")
        self.partial = out_path.with_name(out_path.name + ".partial")
        self.digest, self.n_batches, self.chunk_batches = digest, n_batches, chunk_batches

    def resumable(self) -> int:
        """Batches already in the partial file (0 when there is nothing valid to resume)."""
        if not (self.path.is_file() and self.partial.is_file()):
            return 0
        try:
            state = read_json(self.path, "extraction progress file")
        except ValueError as exc:
            log.warning("ignoring %s (%s)", self.path, exc)
            return 0
        if state.get("digest") != self.digest or state.get("n_batches") != self.n_batches:
            log.warning("%s belongs to other inputs or options: discarding the partial file %s", self.path,
                        self.partial)
            return 0
        return int(state.get("batches_done", 0))

    def save(self, batches_done: int, computed: int) -> None:
        write_json(self.path, {"digest": self.digest, "n_batches": self.n_batches, "batches_done": batches_done,
                               "chunk_batches": self.chunk_batches, "batches_computed_this_run": computed})

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def extract_features(manifest_path: str | os.PathLike, encoder: Any, out_path: str | os.PathLike, *,
                     batch_size: int = 64, device: str | torch.device = "auto", dtype: str = "float32",
                     num_workers: int = 0, limit: int | None = None, progress: bool = True,
                     autocast: str = "none", precision: str = "autocast", train_captions: str = "used",
                     chunk_batches: int = DEFAULT_CHUNK_BATCHES) -> Path:
    """Embed one dataset with one encoder, all layers, into ``out_path`` (docs/method.md §2; docs/encoders.md "Feature file").

    Args:
        manifest_path: the manifest parquet (or its stem); read with :func:`structure_align.data.read_manifest`.
        encoder: an :class:`~structure_align.encoders.Encoder` or a registry name.
        out_path: the ``.safetensors`` file to write (renamed into place when complete).
        batch_size: images / texts per forward pass.
        device: ``auto|cpu|cuda|cuda:N``.
        dtype: storage dtype of the layers, ``float32`` or ``float16``.
        num_workers: DataLoader workers decoding images (fewer when ``/dev/shm`` is short, :func:`shm_workers`);
            0 = one background thread prefetching the next batch.
        limit: use only the first ``limit`` manifest rows (vision rows; for pairs/retrieval text files the captions
            of those rows; zero-shot prompt sets are not limited since they do not depend on rows).
        progress: show a tqdm bar.
        autocast: ``none``, ``bf16`` or ``fp16``: forwards under ``torch.autocast`` (features converted to float32,
            then to the storage ``dtype``); only with ``precision = autocast``.
        precision: ``autocast`` (float32 weights, the ``autocast`` forwards) or ``released`` (the released code:
            vision float32, text encoder with bfloat16 weights), :func:`apply_precision`.
        train_captions: ``used`` or ``all``, :func:`extraction_texts`.
        chunk_batches: batches per resume chunk (progress flushed after each chunk; not part of the result).

    Vision rows = manifest rows; text rows = :func:`extraction_texts` rows (processed longest-first so that batches
    carry little padding, written back in their original order).
    """
    from .data import read_manifest
    from .encoders import Encoder, load_encoder

    check_options(batch_size=batch_size, dtype=dtype, limit=limit, num_workers=num_workers, autocast=autocast,
                  precision=precision, chunk_batches=chunk_batches)
    manifest_path, out_path = Path(manifest_path), Path(out_path)
    df, info = read_manifest(manifest_path)
    if limit is not None:
        df = df.iloc[:limit].reset_index(drop=True)
    dev = resolve_device(device)
    if isinstance(encoder, str):
        encoder = load_encoder(encoder, device=dev)
    elif isinstance(encoder, Encoder):
        encoder.to(dev)
    else:
        raise TypeError(f"encoder must be an Encoder or a registry name, got {type(encoder).__name__}")
    apply_precision(encoder, precision)

    groups: np.ndarray | None = None
    options = {"precision": precision, "autocast": autocast}
    if encoder.modality == "vision":
        paths = _resolve_image_paths(df, manifest_path)
        n, order, unit = len(paths), np.arange(len(paths)), "img"
        batches = _split_batches(order, batch_size)

        def source_from(start: int) -> Any:
            return _ImageBatches(paths, batches[start:], encoder.preprocess)
    else:
        texts, groups = extraction_texts(df, info, train_captions)
        if info.task == "pairs":
            options["train_captions"] = train_captions
        n, unit = len(texts), "text"
        # longest first: similar lengths share a batch, so little compute is spent on padding
        order = np.array(sorted(range(n), key=lambda i: (-len(texts[i]), i)), dtype=np.int64)
        batches = _split_batches(order, batch_size)

        def source_from(start: int) -> Any:
            return lambda k: encoder.tokenize([texts[i] for i in batches[start + k]])
    if n == 0:
        raise ValueError(f"{manifest_path}: no {encoder.modality} rows to embed for dataset {info.name!r}")
    workers = 0
    if unit == "img" and num_workers > 0:
        sample = encoder.preprocess([open_image(paths[0])])
        workers = shm_workers(num_workers, batch_size * sample[0].numel() * sample.element_size())
    return _extract(encoder, batches, source_from, out_path, groups, dev,
                    _metadata(encoder, info, dtype, n, limit, options), dtype, autocast, chunk_batches, workers,
                    progress, unit, order)


def _extract(encoder: Any, batches: list[np.ndarray], source_from: Callable[[int], Any], out_path: Path,
             groups: np.ndarray | None, dev: torch.device, meta: dict[str, str], dtype: str, autocast: str,
             chunk_batches: int, workers: int, progress: bool, unit: str, order: np.ndarray) -> Path:
    """Fill ``<out>.partial`` chunk by chunk (resuming a matching partial), then finalise and rename it."""
    n, dims = int(sum(len(b) for b in batches)), [int(d) for d in encoder.embed_dims]
    specs: dict[str, tuple[Any, tuple[int, ...]]] = {layer_key(i): (NP_DTYPES[dtype], (n, d)) for i, d in
                                                     enumerate(dims)}
    if groups is not None:
        specs["groups"] = (np.int64, (n,))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    digest = _resume_digest(specs, meta, order, batches, encoder)
    state = _Progress(out_path, digest, len(batches), chunk_batches)
    start = state.resumable()
    writer = SafetensorsFileWriter(state.partial, specs, meta, resume=start > 0)
    if groups is not None:
        writer.write_tensor("groups", groups.astype(np.int64))
    outputs = [writer.rows(layer_key(i)) for i in range(len(dims))]
    if start:
        log.info("resuming %s from batch %d of %d (%s)", out_path, start, len(batches), state.partial)
    else:
        state.save(0, 0)
    log.info("extracting %s features of %s (%d rows, %d layers, %.1f MB output) on %s, precision %s, autocast %s, "
             "into %s", encoder.name, meta["dataset"], n, len(dims), writer.payload_size / 2**20, dev,
             meta["precision"], autocast, state.partial)

    def checkpoint(done: int) -> None:
        writer.flush()  # rows on disk first, then the progress that claims them
        state.save(done, done - start)

    stream = _batch_stream(source_from(start), len(batches) - start, workers, dev.type == "cuda")
    _run_batches(encoder, batches, start, stream, outputs, dev, autocast, progress, unit, chunk_batches, checkpoint)
    outputs.clear()  # close the memory maps (flushed by the last checkpoint)
    writer.finalize()
    os.replace(state.partial, out_path)
    state.clear()
    log.info("wrote %s (computed %d of %d batches, resumed after %d)", out_path, len(batches) - start, len(batches),
             start)
    return out_path


def _resume_digest(specs: dict, meta: dict[str, str], order: np.ndarray, batches: list[np.ndarray],
                   encoder: Any) -> str:
    """What a partial file's rows depend on: layout + metadata (encoder, manifest digest, options), the row order
    and batch split, and a fingerprint of the weights."""
    payload = {"specs": {k: [np.dtype(d).str, list(s)] for k, (d, s) in specs.items()}, "meta": meta,
               "order": hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest(),
               "batch_sizes": [len(b) for b in batches], "weights": _weights_fingerprint(encoder.model)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _run_batches(encoder: Any, batches: Sequence[np.ndarray], start: int, stream: Iterator[Any],
                 outputs: list[np.ndarray], dev: torch.device, autocast: str, progress: bool, unit: str,
                 chunk_batches: int, checkpoint: Callable[[int], None]) -> None:
    """Forward ``batches[start:]`` (under autocast when asked), copy each layer's rows into ``outputs`` and call
    ``checkpoint(batches done)`` after every ``chunk_batches`` batches; log rows/s."""
    todo = batches[start:]
    n = sum(len(b) for b in todo)
    bar = tqdm(total=n, unit=unit, disable=not progress, desc=f"{encoder.name}")
    amp = AUTOCAST[autocast]
    begin = time.perf_counter()
    encoder.model.eval()
    with torch.inference_mode(), (torch.autocast(device_type=dev.type, dtype=amp) if amp is not None
                                  else contextlib.nullcontext()):
        for k, (idx, batch) in enumerate(zip(todo, stream, strict=True), start=start + 1):
            feats = encoder.forward_layers(batch)
            if len(feats) != len(outputs):
                raise RuntimeError(f"encoder {encoder.name} returned {len(feats)} layers, declared {len(outputs)}")
            for out, f in zip(outputs, feats, strict=True):
                if f.shape != (len(idx), out.shape[1]):
                    raise RuntimeError(f"encoder {encoder.name} returned a layer of shape {tuple(f.shape)}, expected "
                                       f"{(len(idx), out.shape[1])}")
                out[idx] = f.detach().to("cpu", torch.float32).numpy()
            bar.update(len(idx))
            if k % chunk_batches == 0 or k == len(batches):
                checkpoint(k)
    bar.close()
    seconds = time.perf_counter() - begin
    log.info("throughput: %d %ss in %.1f s = %.1f %ss/s (%s, autocast %s)", n, unit, seconds,
             n / max(seconds, 1e-9), unit, dev, autocast)
