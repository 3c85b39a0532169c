"""Tests of the training losses (docs/method.md §5.1, §5.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import structure_align.losses as losses_mod
from structure_align.losses import LambdaWarmup, alignment_loss, clip_loss
from structure_align.regularizer import structure_regularizer


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _explicit_clip(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau

    def ce_rows(z: np.ndarray) -> float:
        lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
        return float(np.mean(lse - np.diag(z)))

    return 0.5 * (ce_rows(logits) + ce_rows(logits.T))


def test_clip_loss_matches_explicit_formula():
    a, b = _randn(9, 5, seed=0), _randn(9, 5, seed=1)
    for tau in (0.05, 0.3):
        assert clip_loss(a, b, tau).item() == pytest.approx(_explicit_clip(a.numpy(), b.numpy(), tau), rel=1e-10)
    # asymmetric logits: the two directions differ, their mean is symmetric in (a, b)
    assert clip_loss(a, b).item() == pytest.approx(clip_loss(b, a).item(), rel=1e-12)


def test_clip_loss_small_for_identical_separated_pairs():
    e = torch.eye(4, dtype=torch.float64)
    # logits: 1/τ on the diagonal, 0 elsewhere -> loss = log(1 + 3 exp(-1/τ)) in both directions
    tau = 0.05
    assert clip_loss(e, e, tau).item() == pytest.approx(math.log1p(3 * math.exp(-1 / tau)), rel=1e-9)
    assert clip_loss(e, e, tau).item() < 1e-7
    # a mismatched pairing is expensive
    assert clip_loss(e, e[[1, 0, 2, 3]], tau).item() > 5.0


def test_clip_loss_normalises_its_inputs():
    a, b = _randn(6, 4, seed=2), _randn(6, 4, seed=3)
    assert clip_loss(3.0 * a, 0.5 * b).item() == pytest.approx(clip_loss(a, b).item(), rel=1e-10)


def test_clip_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(_randn(4, 3, seed=0), _randn(5, 3, seed=0))
    with pytest.raises(ValueError, match="temperature"):
        clip_loss(_randn(4, 3, seed=0), _randn(4, 3, seed=0), temperature=0.0)


def test_lambda_warmup_values():
    w = LambdaWarmup(10.0, 1000)
    assert [w.value(s) for s in (0, 1, 250, 999, 1000, 5000)] == pytest.approx([0.0, 0.01, 2.5, 9.99, 10.0, 10.0])
    assert LambdaWarmup(10.0, 0).value(0) == 10.0
    assert LambdaWarmup(0.0, 100).value(50) == 0.0
    with pytest.raises(ValueError, match="step"):
        w.value(-1)
    with pytest.raises(ValueError, match="warmup_steps"):
        LambdaWarmup(1.0, -5)
    with pytest.raises(ValueError, match="rs_lambda"):
        LambdaWarmup(-1.0, 5)


def _batch(seed: int):
    x_img, x_txt = _randn(16, 12, seed=seed), _randn(16, 7, seed=seed + 1)
    a_img, a_txt = _randn(16, 6, seed=seed + 2), _randn(16, 6, seed=seed + 3)
    return x_img, a_img, x_txt, a_txt


def test_alignment_loss_combines_clip_and_half_rs_sum():
    x_img, a_img, x_txt, a_txt = _batch(10)
    total, parts = alignment_loss(x_img, a_img, x_txt, a_txt, rs_lambda=4.0, temperature=0.1)
    rs_img = structure_regularizer(x_img, a_img, tau=0.1).item()
    rs_txt = structure_regularizer(x_txt, a_txt, tau=0.1).item()
    expected = clip_loss(a_img, a_txt, 0.1).item() + 4.0 * 0.5 * (rs_img + rs_txt)
    assert total.item() == pytest.approx(expected, rel=1e-10)
    assert parts["rs_img"] == pytest.approx(rs_img) and parts["rs_txt"] == pytest.approx(rs_txt)
    assert parts["rs"] == pytest.approx(0.5 * (rs_img + rs_txt))
    assert parts["total"] == pytest.approx(expected) and parts["rs_lambda"] == 4.0


def test_alignment_loss_rs_kwargs_override_tau_and_options():
    x_img, a_img, x_txt, a_txt = _batch(20)
    _, parts = alignment_loss(x_img, a_img, x_txt, a_txt, rs_lambda=1.0, temperature=0.05,
                              rs_kwargs={"tau": 0.2, "levels": 2, "weighting": "inverse"})
    assert parts["rs_img"] == pytest.approx(
        structure_regularizer(x_img, a_img, tau=0.2, levels=2, weighting="inverse").item(), rel=1e-10)
    assert parts["clip"] == pytest.approx(clip_loss(a_img, a_txt, 0.05).item(), rel=1e-10)
    with pytest.raises(ValueError, match="unknown rs_kwargs"):
        alignment_loss(x_img, a_img, x_txt, a_txt, rs_lambda=1.0, rs_kwargs={"temperature": 0.1})


def test_alignment_loss_skips_rs_when_lambda_is_zero(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("R_S must not be computed when rs_lambda == 0")

    monkeypatch.setattr(losses_mod, "structure_regularizer", boom)
    x_img, a_img, x_txt, a_txt = _batch(30)
    total, parts = alignment_loss(x_img, a_img, x_txt, a_txt, rs_lambda=0.0)
    assert total.item() == pytest.approx(clip_loss(a_img, a_txt).item())
    assert "rs" not in parts


def test_alignment_loss_gradients_reach_both_heads():
    g = torch.Generator().manual_seed(0)
    x_img, x_txt = torch.randn(12, 10, generator=g), torch.randn(12, 6, generator=g)
    h_img, h_txt = torch.nn.Linear(10, 4), torch.nn.Linear(6, 4)
    total, _ = alignment_loss(x_img, h_img(x_img), x_txt, h_txt(x_txt), rs_lambda=10.0)
    total.backward()
    for head in (h_img, h_txt):
        assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
