"""Cross-modal layer similarity and layer selection (docs/method.md §3).

The score of an (image layer, text layer) pair is the mutual k-NN overlap of the two row-aligned feature sets
(§3.1, identical to platonic-rep's ``mutual_knn``); "Similar" aligns the best-scoring pair, "Last" the last layers
(§3.2). Linear CKA is provided for the metric ablation.

``layer_scores`` scores a whole grid. It computes each layer's neighbour lists once (not once per pair) and counts
the overlaps by gathering the other layer's neighbour indices from a boolean membership matrix, i.e. O(n k) per
pair instead of the O(n^2 d) of recomputing two similarity matrices; the result is identical to calling
``mutual_knn`` pair by pair because both use the same neighbour routine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

K_RULES: tuple[str, ...] = ("rice", "sqrt", "sturges")
METRICS: tuple[str, ...] = ("mutual_knn", "cka")
CHOICES: tuple[str, ...] = ("last", "similar")

# bytes of B x B scratch (similarity rows, membership rows) one chunk may allocate
_CHUNK_BYTES = 1 << 26


def _as_2d_float(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return ``x`` as a float tensor (float64 kept, anything else float32), rejecting non-2-D or non-finite input."""
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    # a finite sum proves every entry finite; only a non-finite sum (NaN/inf, or a rare overflow) needs the full scan
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def knn_k(n: int, k: int | str = "rice") -> int:
    """Number of neighbours for ``n`` scored samples (docs/method.md §3.1 k-rule table).

    ``"rice"`` = ⌈2 n^{1/3}⌉, ``"sqrt"`` = ⌈√n⌉, ``"sturges"`` = ⌈log₂ n + 1⌉, or an explicit integer. The rules are
    evaluated in exact integer arithmetic so that perfect cubes/squares/powers of two do not round up by float error.
    A rule's k is capped at n - 1 (a sample has only n - 1 candidate neighbours); an explicit k above n - 1 is an
    error.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"knn_k: need an integer n >= 2 samples, got n={n!r}")
    n = int(n)
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        if not 1 <= k <= n - 1:
            raise ValueError(f"knn_k: k={k} must be in [1, n-1] = [1, {n - 1}]")
        return int(k)
    if k == "rice":
        # smallest integer r with r >= 2 n^(1/3)  <=>  r^3 >= 8 n
        r = math.ceil(2.0 * n ** (1.0 / 3.0))
        while (r - 1) ** 3 >= 8 * n:
            r -= 1
        while r**3 < 8 * n:
            r += 1
    elif k == "sqrt":
        r = math.isqrt(n)
        r = r if r * r == n else r + 1
    elif k == "sturges":
        # ceil(log2 n) == (n - 1).bit_length() for n >= 1
        r = (n - 1).bit_length() + 1
    else:
        raise ValueError(f"knn_k: k={k!r} is neither a positive integer nor one of {K_RULES}")
    return min(r, n - 1)


def knn_indices(x: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
    """Indices [n, k] of each row's k nearest rows by cosine similarity, self excluded (docs/method.md §3.1).

    Rows are L2-normalised; the similarity matrix is built in row chunks so that n = 5000+ stays small in memory.
    """
    x = _as_2d_float(x, "x")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"knn_indices: k={k!r} must be an integer in [1, n-1] = [1, {n - 1}]")
    return _knn(x, int(k))


def _knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`knn_indices` on an already validated float tensor."""
    xn = F.normalize(x, p=2, dim=1)
    n = xn.shape[0]
    out = torch.empty((n, k), dtype=torch.int64, device=xn.device)
    chunk = max(1, _CHUNK_BYTES // (n * xn.element_size()))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sim = xn[start:stop] @ xn.T
        rows = torch.arange(stop - start, device=xn.device)
        # a sample is never its own neighbour
        sim[rows, rows + start] = -math.inf
        out[start:stop] = sim.topk(k, dim=1).indices
    return out


def _overlap_counts(idx_a: torch.Tensor, idx_b_stack: torch.Tensor) -> torch.Tensor:
    """|kNN_A(i) ∩ kNN_B(i)| summed over rows, for one A neighbour table [n, k] and a stack of B tables [m, n, k].

    A boolean membership matrix of A's neighbours (row chunks of it) is gathered at all B tables' indices at once:
    O(n m k) work per A layer instead of recomputing or intersecting n x n masks per pair.
    """
    m, n, k = idx_b_stack.shape
    idx_b_cat = idx_b_stack.permute(1, 0, 2).reshape(n, m * k)
    totals = torch.zeros(m, dtype=torch.int64, device=idx_a.device)
    chunk = max(1, _CHUNK_BYTES // n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        member = torch.zeros((stop - start, n), dtype=torch.bool, device=idx_a.device)
        member.scatter_(1, idx_a[start:stop], True)
        hits = member.gather(1, idx_b_cat[start:stop]).reshape(stop - start, m, k)
        totals += hits.sum(dim=(0, 2))
    return totals


def mutual_knn(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, k: int | str = "rice") -> float:
    """Mutual k-NN alignment (1/n) Σ_i |kNN_A(i) ∩ kNN_B(i)| / k of two row-aligned feature sets (docs/method.md §3.1)."""
    a = _as_2d_float(a, "a")
    b = _as_2d_float(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"mutual_knn: a and b must have the same rows, got {a.shape[0]} and {b.shape[0]}")
    n = a.shape[0]
    kk = knn_k(n, k)
    total = _overlap_counts(_knn(a, kk), _knn(b, kk)[None])
    return float(total[0]) / (n * kk)


def _centred_rows(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Row-normalise (as the released metric pipeline does, §3.1) and column-centre, in float64 for CKA."""
    x = x.to(torch.float64)
    if normalize:
        x = F.normalize(x, p=2, dim=1)
    return x - x.mean(dim=0, keepdim=True)


def cka(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, normalize: bool = True) -> float:
    """Linear CKA = ‖Aᶜᵀ Bᶜ‖²_F / (‖Aᶜᵀ Aᶜ‖_F ‖Bᶜᵀ Bᶜ‖_F) with column-centred Aᶜ, Bᶜ (metric ablation, §3.1).

    With ``normalize`` (the released default) rows are L2-normalised first. Computed in float64.
    """
    a = _as_2d_float(a, "a")
    b = _as_2d_float(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"cka: a and b must have the same rows, got {a.shape[0]} and {b.shape[0]}")
    ac, bc = _centred_rows(a, normalize), _centred_rows(b, normalize)
    denom = torch.linalg.matrix_norm(ac.T @ ac) * torch.linalg.matrix_norm(bc.T @ bc)
    if float(denom) == 0.0:
        raise ValueError("cka: a feature set is constant over the rows (zero centred Gram matrix)")
    return float(torch.linalg.matrix_norm(ac.T @ bc) ** 2 / denom)


def _check_layers(layers: Sequence[torch.Tensor | np.ndarray], name: str) -> list[torch.Tensor]:
    """Convert and validate a list of [n, d_l] layers; every layer must have the same n."""
    if len(layers) == 0:
        raise ValueError(f"{name} is empty: need at least one layer")
    out = [_as_2d_float(x, f"{name}[{i}]") for i, x in enumerate(layers)]
    n0 = out[0].shape[0]
    for i, x in enumerate(out):
        if x.shape[0] != n0:
            raise ValueError(f"{name}[{i}] has {x.shape[0]} rows, {name}[0] has {n0}")
    return out


def _mutual_knn_grid(a_layers: list[torch.Tensor], b_layers: list[torch.Tensor], kk: int,
                     progress: bool) -> np.ndarray:
    """All-pairs mutual k-NN with each layer's neighbour table computed once."""
    n = a_layers[0].shape[0]
    bar = tqdm(total=len(a_layers) + len(b_layers), desc="layer kNN", disable=not progress)
    idx_b = []
    for x in b_layers:
        idx_b.append(_knn(x, kk))
        bar.update(1)
    idx_b_stack = torch.stack(idx_b)
    scores = np.empty((len(a_layers), len(b_layers)), dtype=np.float64)
    for i, x in enumerate(a_layers):
        scores[i] = _overlap_counts(_knn(x, kk), idx_b_stack).cpu().numpy() / (n * kk)
        bar.update(1)
    bar.close()
    return scores


def _cka_grid(a_layers: list[torch.Tensor], b_layers: list[torch.Tensor], progress: bool) -> np.ndarray:
    """All-pairs linear CKA via centred Gram matrices, accumulated over column blocks to bound memory.

    ⟨K_i, L_j⟩_F is summed block by block, where K_i[:, c] = Aᶜ_i (Aᶜ_i[c])ᵀ; each Gram block is formed once.
    """
    ac = [_centred_rows(x, True) for x in a_layers]
    bc = [_centred_rows(x, True) for x in b_layers]
    n = ac[0].shape[0]
    n_mats = len(ac) + len(bc)
    block = max(1, _CHUNK_BYTES * 4 // (n * 8 * n_mats))
    dev = ac[0].device
    cross = torch.zeros((len(ac), len(bc)), dtype=torch.float64, device=dev)
    sq_a = torch.zeros(len(ac), dtype=torch.float64, device=dev)
    sq_b = torch.zeros(len(bc), dtype=torch.float64, device=dev)
    for start in tqdm(range(0, n, block), desc="CKA Gram blocks", disable=not progress):
        stop = min(n, start + block)
        ka = torch.stack([x @ x[start:stop].T for x in ac]).reshape(len(ac), -1)
        kb = torch.stack([y @ y[start:stop].T for y in bc]).reshape(len(bc), -1)
        cross += ka @ kb.T
        sq_a += (ka * ka).sum(dim=1)
        sq_b += (kb * kb).sum(dim=1)
    denom = sq_a.sqrt()[:, None] * sq_b.sqrt()[None, :]
    if bool((denom == 0).any()):
        raise ValueError("layer_scores(cka): a layer is constant over the rows (zero centred Gram matrix)")
    return (cross / denom).cpu().numpy()


def layer_scores(a_layers: Sequence[torch.Tensor | np.ndarray], b_layers: Sequence[torch.Tensor | np.ndarray],
                 k: int | str = "rice", metric: str = "mutual_knn", *, progress: bool = False) -> np.ndarray:
    """Score every (a-layer, b-layer) pair (docs/method.md §3.2 step 2); returns float64 [len(a_layers), len(b_layers)].

    ``scores[i, j]`` equals ``mutual_knn(a_layers[i], b_layers[j], k)`` (or ``cka``) exactly as defined there; layers
    may have different widths but must share the rows. ``k`` is ignored for ``metric="cka"``.
    """
    if metric not in METRICS:
        raise ValueError(f"layer_scores: metric={metric!r} is not one of {METRICS}")
    a = _check_layers(a_layers, "a_layers")
    b = _check_layers(b_layers, "b_layers")
    if a[0].shape[0] != b[0].shape[0]:
        raise ValueError(f"layer_scores: a_layers have {a[0].shape[0]} rows, b_layers have {b[0].shape[0]}")
    n = a[0].shape[0]
    log.info("scoring %d x %d layer pairs on %d rows (%s)", len(a), len(b), n, metric)
    if metric == "cka":
        return _cka_grid(a, b, progress)
    return _mutual_knn_grid(a, b, knn_k(n, k), progress)


def _check_scores(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 2-D matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s


def last_layers(scores: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """The "Last" choice (docs/method.md §3.2 step 4): the last layer of each encoder."""
    s = _check_scores(scores)
    return s.shape[0] - 1, s.shape[1] - 1


def similar_layers(scores: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """The "Similar" choice (docs/method.md §3.2 step 3): argmax pair; ties go to the first in row-major order."""
    s = _check_scores(scores)
    i, j = np.unravel_index(int(np.argmax(s)), s.shape)
    return int(i), int(j)


def choose_layers(scores: np.ndarray | torch.Tensor, choice: str) -> tuple[int, int]:
    """Dispatch ``choice`` in {"last", "similar"} to :func:`last_layers` / :func:`similar_layers`."""
    if choice == "last":
        return last_layers(scores)
    if choice == "similar":
        return similar_layers(scores)
    raise ValueError(f"choose_layers: choice={choice!r} is not one of {CHOICES}")


def score_subsample(n: int, max_n: int = 5000, *, seed: int) -> np.ndarray:
    """Sorted row indices used for layer scoring (docs/method.md §3.2 step 1): all n rows, or max_n drawn without
    replacement with a generator seeded by ``seed``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"score_subsample: n must be a positive integer, got {n!r}")
    if isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)) or max_n < 1:
        raise ValueError(f"score_subsample: max_n must be a positive integer, got {max_n!r}")
    if n <= max_n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_n, replace=False)).astype(np.int64)
