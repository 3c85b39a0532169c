"""Training loop, model-selection rule, subsampling and LR finder (docs/method.md §5.3, §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import structure_align.train as train_mod
from structure_align.csa import CSA
from structure_align.heads import HeadAligner
from structure_align.pool import subsample_pairs
from structure_align.train import _lr_from_curve, lr_find, train_heads
from structure_align.trainconfig import TrainConfig


def _pairs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired toy features sharing a 4-d latent."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g)
    x = z @ torch.randn(4, 8, generator=g) + 0.2 * torch.randn(n, 8, generator=g)
    y = z @ torch.randn(4, 6, generator=g) + 0.2 * torch.randn(n, 6, generator=g)
    return x, y


def _cfg(**kw) -> TrainConfig:
    base = {"head": "linear", "dim": 8, "rs_lambda": 1.0, "rs_warmup_steps": 4, "batch_size": 32, "epochs": 6,
            "patience": 50, "seed": 0}
    base.update(kw)
    return TrainConfig(**base)


def test_subsample_pairs_deterministic_sorted_sized() -> None:
    a = subsample_pairs(1000, 0.1, seed=3)
    assert np.array_equal(a, subsample_pairs(1000, 0.1, seed=3))
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, subsample_pairs(1000, 0.1, seed=4))
    assert np.array_equal(subsample_pairs(7, 1.0, seed=0), np.arange(7))
    assert len(subsample_pairs(100, 0.001, seed=0)) == 2  # at least two rows


@pytest.mark.parametrize("n,fraction", [(100, 0.0), (100, 1.5), (100, -0.1), (1, 0.5)])
def test_subsample_pairs_errors(n: int, fraction: float) -> None:
    with pytest.raises(ValueError, match="subsample"):
        subsample_pairs(n, fraction, seed=0)


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="head='conv'"):
        TrainConfig(head="conv")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"lam": 1.0})
    cfg = TrainConfig.from_dict({"rs_lambda": 10.0, "betas": [0.9, 0.99]})
    assert cfg.betas == (0.9, 0.99) and TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.rs_kwargs()["tau"] == cfg.temperature and TrainConfig(rs_tau=0.2).rs_kwargs()["tau"] == 0.2


def test_training_lowers_loss() -> None:
    x, y = _pairs()
    res = train_heads(x, y, x[:32], y[:32], _cfg(epochs=8, lr=1e-2), progress=False)
    losses = [h["train_clip"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0]
    assert isinstance(res.aligner, HeadAligner) and not res.aligner.training
    assert {"train_loss", "val_loss", "train_clip", "train_rs", "val_rs", "lambda", "lr"} <= set(res.history[0])


def test_same_seed_identical_different_seed_differs() -> None:
    x, y = _pairs()
    runs = [train_heads(x, y, x[:32], y[:32], _cfg(seed=s, head="mlp", head_options={"dropout": 0.1}),
                        progress=False) for s in (1, 1, 2)]
    sa, sb, sc = (r.aligner.state_dict() for r in runs)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert runs[0].history == runs[1].history
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert runs[0].history != runs[2].history


def test_early_stopping_restores_best_epoch() -> None:
    x, y = _pairs(n=128)
    # validation pairs are mismatched, so learning the true pairing makes the validation loss rise
    perm = torch.roll(torch.arange(32), 1)
    cfg = _cfg(rs_lambda=0.0, lr=2e-2, epochs=40, patience=3)
    res = train_heads(x, y, x[:32], y[:32][perm], cfg, progress=False)
    vals = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(vals))
    assert len(res.history) == res.best_epoch + 1 + cfg.patience < cfg.epochs  # stopped early
    # the same seed run stopped right after the best epoch has exactly the weights of that epoch
    ref = train_heads(x, y, x[:32], y[:32][perm], _cfg(rs_lambda=0.0, lr=2e-2, epochs=res.best_epoch + 1,
                                                        patience=3), progress=False)
    assert ref.history == res.history[:res.best_epoch + 1]
    final, snap = res.aligner.state_dict(), ref.aligner.state_dict()
    assert all(torch.equal(final[k], snap[k]) for k in final)


def test_lambda_warmup_per_step(monkeypatch) -> None:
    seen: list[float] = []
    real = train_mod.alignment_loss

    def spy(*args, **kwargs):
        if torch.is_grad_enabled():  # training steps only, not validation
            seen.append(kwargs["rs_lambda"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "alignment_loss", spy)
    x, y = _pairs(n=64)  # 2 steps per epoch at batch 32
    res = train_heads(x, y, x[:32], y[:32], _cfg(rs_lambda=2.0, rs_warmup_steps=4, epochs=3), progress=False)
    assert seen == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    # history records the λ of each epoch's last step; the first epoch's R_S part comes from its second step only
    assert [h["lambda"] for h in res.history] == pytest.approx([0.5, 1.5, 2.0])
    assert res.history[0]["train_rs"] is not None


def test_baseline_has_no_rs_part() -> None:
    x, y = _pairs(n=64)
    res = train_heads(x, y, None, None, _cfg(rs_lambda=0.0, epochs=2), progress=False)
    assert all(h["train_rs"] is None and h["val_loss"] is None for h in res.history)


def test_released_head_keeps_dead_gate_through_training() -> None:
    x, y = _pairs(n=64)
    res = train_heads(x, y, x[:32], y[:32], _cfg(head="released_mlp", head_options={"rank": 4}, epochs=3),
                      progress=False)
    head = res.aligner.image_head
    assert head.gate_logit.item() == -math.inf and torch.count_nonzero(head.up.weight) == 0


def test_lr_find_finite_and_restores_weights() -> None:
    x, y = _pairs(n=128)
    torch.manual_seed(0)
    aligner = HeadAligner.build("linear", 8, 6, 8)
    before = {k: v.clone() for k, v in aligner.state_dict().items()}
    lr = lr_find(aligner, x, y, _cfg(batch_size=64), num_iters=60)
    assert math.isfinite(lr) and lr >= 1e-6
    assert all(torch.equal(before[k], v) for k, v in aligner.state_dict().items())


def test_lr_from_curve_finds_steepest_point() -> None:
    lrs = 10 ** np.linspace(-7, 1, 101)
    losses = 2.0 - np.tanh(np.log10(lrs) + 3.0)  # steepest descent at lr = 1e-3, minimum at the end
    steep = _lr_from_curve(lrs, losses, smoothing=0.05)
    assert steep == pytest.approx(1e-3, rel=0.25)
    assert _lr_from_curve(lrs[:5], np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.05) is None  # rising: no steep point


def test_train_with_lr_finder_records_lr() -> None:
    x, y = _pairs(n=64)
    res = train_heads(x, y, x[:32], y[:32], _cfg(lr_finder=True, epochs=2), progress=False)
    # the history logs the LR of the epoch's last step, one cosine step after the found LR
    assert res.lr >= 1e-6 and res.history[0]["lr"] == pytest.approx(res.lr, rel=1e-2)


def test_train_heads_csa_path() -> None:
    x, y = _pairs(n=128)
    res = train_heads(x, y, None, None, _cfg(head="csa", csa_sim_dim=4, rs_lambda=1.0, csa_epochs=2),
                      progress=False)
    assert isinstance(res.aligner, CSA) and res.aligner.sim_dim == 4 and len(res.history) == 2
    plain = train_heads(x, y, None, None, _cfg(head="csa", rs_lambda=0.0), progress=False)
    assert plain.aligner.sim_dim == 6 and plain.history == []  # min(dim, d_x, d_y)


def test_train_heads_input_errors() -> None:
    x, y = _pairs(n=64)
    with pytest.raises(ValueError, match="y_train"):
        train_heads(x, y[:10], None, None, _cfg(), progress=False)
    with pytest.raises(ValueError, match="x_val"):
        train_heads(x, y, x[:5], None, _cfg(), progress=False)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_train"):
        train_heads(bad, y, None, None, _cfg(), progress=False)


def test_csa_rs_uses_released_csa_defaults() -> None:
    kw = TrainConfig(head="csa", rs_lambda=1.0).rs_kwargs()
    assert kw["tau"] == 0.2 and kw["weighting"] == "inverse"
    assert TrainConfig(head="linear", rs_lambda=1.0).rs_kwargs()["weighting"] == "none"


def test_warmup_in_epochs_scales_with_steps_per_epoch() -> None:
    cfg = TrainConfig(rs_warmup_epochs=3, rs_warmup_steps=1000)
    assert cfg.warmup_steps(7) == 21 and TrainConfig(rs_warmup_steps=50).warmup_steps(7) == 50


def test_select_after_warmup_never_restores_a_partial_lambda() -> None:
    x, y = _pairs(n=64)  # 2 steps per epoch
    perm = torch.roll(torch.arange(32), 1)  # mismatched validation: the first epochs have the lowest loss
    cfg = {"rs_lambda": 2.0, "rs_warmup_steps": 6, "epochs": 12, "patience": 50, "lr": 2e-2}
    released = train_heads(x, y, x[:32], y[:32][perm], _cfg(**cfg), progress=False)
    honest = train_heads(x, y, x[:32], y[:32][perm], _cfg(select_after_warmup=True, **cfg), progress=False)
    assert released.lambda_at_best < 2.0  # the released rule picks an epoch inside the ramp here
    assert honest.lambda_at_best == pytest.approx(2.0) and honest.best_epoch >= 3
    assert [h["eligible"] for h in honest.history[:4]] == [False, False, False, True]
    assert all(h["eligible"] for h in released.history)


def test_select_on_clip_monitors_validation_infonce() -> None:
    x, y = _pairs(n=64)
    res = train_heads(x, y, x[:32], y[:32], _cfg(select_on="clip", epochs=8, lr=1e-2), progress=False)
    assert res.best_epoch == int(np.argmin([h["val_clip"] for h in res.history]))


def test_select_after_warmup_budget_error() -> None:
    x, y = _pairs(n=64)
    with pytest.raises(ValueError, match="warm-up"):
        train_heads(x, y, None, None, _cfg(select_after_warmup=True, rs_warmup_steps=100, epochs=3), progress=False)
