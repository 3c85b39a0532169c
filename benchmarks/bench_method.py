"""Benchmark of the method core against naive references (not part of the test run).

(a) R_S forward + backward (``structure_regularizer``) against the literal definition with a fresh
    ``torch.matrix_power`` per level and ``F.kl_div`` as in the released code; outputs and gradients must agree.
(b) All-pairs layer scoring (``layer_scores``) on a 13 x 7 layer grid against a loop that recomputes both neighbour
    lists and dense n x n membership masks for every pair (platonic-rep style); scores must be identical.
(c) One training step of the default's most expensive runs (linear heads on 192- and 384-wide features, batch 1,024,
    d = 512; forward, backward, AdamW) with InfoNCE + λ R_S against InfoNCE alone: the share of a step that R_S
    costs, hence the most that any faster R_S could save in a λ rerun (docs/reliability.md "Partial reruns").

Timings are medians of interleaved repeats measured in the same run, so machine load affects both sides alike.

    .venv/bin/python benchmarks/bench_method.py            # full
    .venv/bin/python benchmarks/bench_method.py --quick    # a smoke run in well under a minute
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from structure_align.heads import HeadAligner
from structure_align.losses import alignment_loss
from structure_align.regularizer import structure_regularizer
from structure_align.similarity import knn_k, layer_scores


def naive_structure_reg(x: torch.Tensor, a: torch.Tensor, levels: int, tau: float, weighting: str,
                        eps: float = 1e-12) -> torch.Tensor:
    """Literal R_S (docs/method.md §5.2): fresh matrix_power per level, two F.kl_div calls per level."""
    def prep(z: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z, p=2, dim=-1)
        return z - z.mean(0, keepdim=True)

    xs, as_ = prep(x.detach()), prep(a)
    sim_x, sim_a = xs @ xs.T / tau, as_ @ as_.T / tau
    total = 0.0
    for level in range(1, levels + 1):
        p = torch.matrix_power(F.softmax(sim_x, dim=-1), level)
        q = torch.matrix_power(F.softmax(sim_a, dim=-1), level)
        m = 0.5 * (p + q)
        d = 0.5 * (F.kl_div((q + eps).log(), m + eps, reduction="batchmean")
                   + F.kl_div((p + eps).log(), m + eps, reduction="batchmean"))
        d = F.relu(d)
        total = total + (d if weighting == "none" else d / level)
    return total / levels


def naive_mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Straightforward mutual k-NN of one pair: both neighbour lists and dense masks recomputed (§3.1)."""
    n = a.shape[0]

    def knn(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, p=2, dim=-1)
        s = x @ x.T
        s.fill_diagonal_(-1e8)
        return s.topk(k, dim=1).indices

    mask_a = torch.zeros(n, n).scatter_(1, knn(a), 1.0)
    mask_b = torch.zeros(n, n).scatter_(1, knn(b), 1.0)
    return float(((mask_a * mask_b).sum(dim=1) / k).mean())


def naive_layer_scores(a_layers: list[torch.Tensor], b_layers: list[torch.Tensor], k: int) -> np.ndarray:
    return np.array([[naive_mutual_knn(a, b, k) for b in b_layers] for a in a_layers])


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function; calls alternate so that load changes hit every side."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_rs(batch_sizes: list[int], levels_list: list[int], repeats: int, seed: int) -> list[str]:
    rows = ["| B | levels | weighting | naive (ms) | structure_regularizer (ms) | ratio ours/naive |",
            "|---|---|---|---|---|---|"]
    for b in batch_sizes:
        for levels in levels_list:
            weighting = "none" if levels == 1 else "inverse"
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(b, 768, generator=g)
            a0 = torch.randn(b, 512, generator=g)
            kw = {"levels": levels, "tau": 0.05, "weighting": weighting}

            def run(fn, x=x, a0=a0):
                a = a0.clone().requires_grad_(True)
                out = fn(x, a)
                out.backward()
                return out.detach(), a.grad

            def ours(x, a, kw=kw):
                return structure_regularizer(x, a, **kw)

            def naive(x, a, kw=kw):
                return naive_structure_reg(x, a, **kw)

            v_ours, g_ours = run(ours)
            v_naive, g_naive = run(naive)
            torch.testing.assert_close(v_ours, v_naive, rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(g_ours, g_naive, rtol=1e-4, atol=1e-9)
            med = interleaved_medians({"naive": lambda: run(naive), "ours": lambda: run(ours)}, repeats)
            ratio = med["ours"] / med["naive"]
            rows.append(f"| {b} | {levels} | {weighting} | {1e3 * med['naive']:.1f} | {1e3 * med['ours']:.1f} "
                        f"| {ratio:.2f} |")
            print(rows[-1], flush=True)
    return rows


def bench_layers(n: int, widths_a: list[int], widths_b: list[int], repeats: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    a_layers = [torch.randn(n, d, generator=g) for d in widths_a]
    b_layers = [torch.randn(n, d, generator=g) for d in widths_b]
    # correlated layers so that scores vary over the grid
    for j, b in enumerate(b_layers):
        b[:, : min(b.shape[1], a_layers[j].shape[1])] += a_layers[j][:, : b.shape[1]] * (j / len(b_layers))
    k = knn_k(n, "rice")
    fast = layer_scores(a_layers, b_layers, k="rice")
    slow = naive_layer_scores(a_layers, b_layers, k)
    # identical neighbour overlaps: the total overlap counts agree exactly; the scores differ only by the rounding of
    # the naive float32 mean
    if not np.array_equal(np.rint(fast * n * k), np.rint(slow * n * k)) or not np.allclose(fast, slow, rtol=0,
                                                                                            atol=1e-6):
        raise AssertionError(f"layer scores differ: max |diff| = {np.abs(fast - slow).max()}")
    med = interleaved_medians({"naive": lambda: naive_layer_scores(a_layers, b_layers, k),
                               "ours": lambda: layer_scores(a_layers, b_layers, k="rice")}, repeats, warmup=0)
    rows = ["| n | grid | k | naive loop (s) | layer_scores (s) | speed-up | scores identical |",
            "|---|---|---|---|---|---|---|",
            (f"| {n} | {len(widths_a)} x {len(widths_b)} | {k} | {med['naive']:.2f} | {med['ours']:.2f} "
             f"| {med['naive'] / med['ours']:.1f}x | yes (same overlap counts) |")]
    print(rows[-1], flush=True)
    return rows


def bench_step(batch: int, widths: tuple[int, int], repeats: int, seed: int) -> list[str]:
    """Median time of one optimiser step with and without R_S (same heads, data and optimiser settings)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=g)
    y = torch.randn(batch, widths[1], generator=g)
    torch.manual_seed(seed)
    aligner = HeadAligner.build("linear", widths[0], widths[1], 512)
    opt = torch.optim.AdamW(aligner.parameters(), lr=1e-3, weight_decay=1e-4)

    def step(lam: float) -> None:
        loss, _ = alignment_loss(x, aligner.encode_image(x), y, aligner.encode_text(y), rs_lambda=lam,
                                 temperature=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    med = interleaved_medians({"clip": lambda: step(0.0), "rs": lambda: step(10.0)}, repeats, warmup=2)
    rows = ["| B | widths -> d | InfoNCE step (ms) | InfoNCE + R_S step (ms) | R_S share of the step | "
            "R_S-free / full |", "|---|---|---|---|---|---|",
            (f"| {batch} | {widths[0]}, {widths[1]} -> 512 | {1e3 * med['clip']:.1f} | {1e3 * med['rs']:.1f} "
             f"| {1 - med['clip'] / med['rs']:.2f} | {med['clip'] / med['rs']:.2f} |")]
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["rs", "layers", "step"], default=None, help="run one of the parts")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
          flush=True)
    widths_a = [768] * 13  # a 13-hidden-state base-size vision transformer
    widths_b = [384] * 7  # a 7-hidden-state MiniLM-L6-size text encoder
    rs_rows: list[str] = []
    layer_rows: list[str] = []
    if args.only in (None, "rs"):
        rs_rows = (bench_rs([256], [1, 3], repeats=5, seed=args.seed) if args.quick
                   else bench_rs([512, 1024], [1, 3], repeats=15, seed=args.seed))
    if args.only in (None, "layers"):
        layer_rows = (bench_layers(500, widths_a, widths_b, repeats=1, seed=args.seed) if args.quick
                      else bench_layers(2000, widths_a, widths_b, repeats=3, seed=args.seed))
    step_rows: list[str] = []
    if args.only in (None, "step"):
        step_rows = (bench_step(256, (192, 384), repeats=5, seed=args.seed) if args.quick
                     else bench_step(1024, (192, 384), repeats=30, seed=args.seed))
    print("\n".join(["", *rs_rows, "", *layer_rows, "", *step_rows]))


if __name__ == "__main__":
    main()
