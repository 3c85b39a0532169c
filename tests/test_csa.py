"""CCA / CSA (docs/method.md §4.3, §4.4): planted subspace recovery, weighting, refinement, whitening, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structure_align.csa import CSA, fit_cca, whiten
from structure_align.heads import load_aligner

RHOS = (0.95, 0.8, 0.6)


def _planted(n: int = 20000, dx: int = 10, dy: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """3 shared latents with correlations RHOS, independent noise elsewhere, hidden by random invertible maps."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 3, generator=g, dtype=torch.float64)
    rho = torch.tensor(RHOS, dtype=torch.float64)
    x_lat = torch.cat([s, torch.randn(n, dx - 3, generator=g, dtype=torch.float64)], dim=1)
    y_shared = rho * s + (1 - rho**2).sqrt() * torch.randn(n, 3, generator=g, dtype=torch.float64)
    y_lat = torch.cat([y_shared, torch.randn(n, dy - 3, generator=g, dtype=torch.float64)], dim=1)
    ax = torch.randn(dx, dx, generator=g, dtype=torch.float64) + 3 * torch.eye(dx, dtype=torch.float64)
    ay = torch.randn(dy, dy, generator=g, dtype=torch.float64) + 3 * torch.eye(dy, dtype=torch.float64)
    return (x_lat @ ax + 5.0).float(), (y_lat @ ay - 2.0).float(), s.float()


def test_cca_recovers_planted_correlations_and_directions() -> None:
    x, y, s = _planted()
    res = fit_cca(x, y, dim=5)
    assert torch.allclose(res.corr[:3], torch.tensor(RHOS), atol=0.02)
    assert res.corr[3] < 0.1  # no shared signal beyond the planted three
    zx = (x - res.mean_x) @ res.w_x
    zy = (y - res.mean_y) @ res.w_y
    for k in range(3):
        # the k-th canonical variate is the k-th planted latent (up to sign)
        c = torch.corrcoef(torch.stack([zx[:, k], s[:, k]]))[0, 1].abs()
        assert c > 0.98
        assert torch.mean(zx[:, k] * zy[:, k]) == pytest.approx(RHOS[k], abs=0.02)
    # whitened: the projected training data have identity covariance
    assert torch.allclose(zx.T @ zx / len(x), torch.eye(5), atol=1e-3)
    assert torch.allclose(zy.T @ zy / len(y), torch.eye(5), atol=1e-3)


def test_cca_more_dims_than_rows_uses_ridge_and_stays_finite() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 50, generator=g), torch.randn(20, 30, generator=g)
    res = fit_cca(x, y, dim=4)
    assert res.ridge_x > 0 and res.ridge_y > 0
    assert torch.isfinite(res.w_x).all() and torch.isfinite(res.corr).all()
    assert (res.corr <= 1 + 1e-4).all() and (res.corr > 0.9).all()  # overfit regime: near-perfect correlations
    reg = fit_cca(x, y, dim=4, reg=1.0)
    assert (reg.corr < res.corr).all()  # a real ridge shrinks the training correlations


def test_cca_input_errors() -> None:
    x, y = torch.randn(10, 4), torch.randn(10, 3)
    with pytest.raises(ValueError, match="dim=4"):
        fit_cca(x, y, dim=4)
    with pytest.raises(ValueError, match="rows"):
        fit_cca(x, y[:9], dim=2)
    with pytest.raises(ValueError, match="non-finite"):
        fit_cca(torch.full((10, 4), float("nan")), y, dim=2)


def test_csa_weighting_scores() -> None:
    x, y, _ = _planted(n=4000)
    plain = CSA.fit(x, y, sim_dim=5)
    weighted = CSA.fit(x, y, sim_dim=5, weighting="correlation")
    xq, yq = x[:7], y[7:14]
    px, py = (xq - plain.mean_x) @ plain.w_x, (yq - plain.mean_y) @ plain.w_y
    cos = torch.nn.functional.normalize(px, dim=1) @ torch.nn.functional.normalize(py, dim=1).T
    assert torch.allclose(plain.encode_image(xq) @ plain.encode_text(yq).T, cos, atol=1e-5)
    rho = plain.corr
    num = (px * rho) @ py.T
    den = (px.pow(2) @ rho).sqrt()[:, None] * (py.pow(2) @ rho).sqrt()[None, :]
    w_scores = weighted.encode_image(xq) @ weighted.encode_text(yq).T
    assert torch.allclose(w_scores, num / den, atol=1e-5)
    assert not torch.allclose(w_scores, cos, atol=1e-3)
    with pytest.raises(ValueError, match="weighting"):
        CSA.fit(x, y, sim_dim=2, weighting="rank")


def test_refine_lowers_loss_and_whitens() -> None:
    x, y, _ = _planted(n=600, dx=12, dy=10)
    csa = CSA.fit(x, y, sim_dim=6)
    before = {k: v.clone() for k, v in csa.state_dict().items()}
    released = CSA.fit(x, y, sim_dim=6)
    released.refine(x, y, epochs=6, lr=5e-3, batch_size=200, seed=3, progress=False)
    history = csa.refine(x, y, epochs=6, lr=5e-3, batch_size=200, seed=3, progress=False, whiten_after=True)
    assert len(history) == 6 and history[-1] < history[0]
    # the released whitening is a no-op: the refined projections keep a non-identity covariance
    zr = (x - released.mean_x) @ released.w_x
    assert not torch.allclose(zr.T @ zr / len(x), torch.eye(6), atol=1e-2)
    assert csa.refined and not torch.equal(csa.w_x, before["w_x"])
    zx = (x - csa.mean_x) @ csa.w_x
    zy = (y - csa.mean_y) @ csa.w_y
    assert torch.allclose(zx.T @ zx / len(x), torch.eye(6), atol=1e-4)
    assert torch.allclose(zy.T @ zy / len(y), torch.eye(6), atol=1e-4)
    assert torch.all(csa.corr[:-1] >= csa.corr[1:])  # dimensions re-sorted by their correlation


def test_refine_is_seeded() -> None:
    x, y, _ = _planted(n=300, dx=8, dy=6)
    a, b, c = (CSA.fit(x, y, sim_dim=4) for _ in range(3))
    a.refine(x, y, epochs=2, batch_size=64, seed=5, progress=False)
    b.refine(x, y, epochs=2, batch_size=64, seed=5, progress=False)
    c.refine(x, y, epochs=2, batch_size=64, seed=6, progress=False)
    assert torch.equal(a.w_x, b.w_x) and torch.equal(a.w_y, b.w_y)
    assert not torch.equal(a.w_x, c.w_x)


def test_whiten_gives_identity_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(500, 6, generator=g)
    xc = xc - xc.mean(0)
    w = whiten(torch.randn(6, 4, generator=g), xc)
    z = xc @ w
    assert torch.allclose(z.T @ z / 500, torch.eye(4), atol=1e-4)


@pytest.mark.parametrize("weighting,refine", [("none", False), ("correlation", True)])
def test_csa_save_load_round_trip(tmp_path, weighting: str, refine: bool) -> None:
    x, y, _ = _planted(n=400, dx=8, dy=6)
    csa = CSA.fit(x, y, sim_dim=4, weighting=weighting)
    if refine:
        csa.refine(x, y, epochs=1, batch_size=128, progress=False)
    path = tmp_path / "csa.safetensors"
    csa.save(path)
    loaded = load_aligner(path)
    assert isinstance(loaded, CSA) and loaded.weighting == weighting and loaded.refined == refine
    assert torch.equal(loaded.encode_image(x), csa.encode_image(x))
    assert torch.equal(loaded.encode_text(y), csa.encode_text(y))
    assert torch.allclose(loaded.encode_text(y).norm(dim=1), torch.ones(len(y)), atol=1e-5)


# -- the refinement objective (docs/method.md §4.4), written out by hand ---------------------------------------------

def _hand_rs(x: np.ndarray, a: np.ndarray, tau: float) -> float:
    """R_S with one level, mean centring, cosine (docs/method.md §5.2), in numpy."""
    def walk(z: np.ndarray) -> np.ndarray:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        z = z - z.mean(axis=0, keepdims=True)
        s = z @ z.T / tau
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = walk(x), walk(a)
    m = 0.5 * (p + q) + 1e-12
    return 0.5 * float(np.sum(m * (2 * np.log(m) - np.log(q + 1e-12) - np.log(p + 1e-12)))) / len(x)


def test_refine_loss_equals_the_hand_formula() -> None:
    rng = np.random.default_rng(0)
    xb, yb = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    w_x, w_y = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    csa = CSA(torch.tensor(w_x), torch.tensor(w_y), torch.zeros(4), torch.zeros(3), torch.ones(2))
    zx = xb @ w_x / np.linalg.norm(xb @ w_x, axis=1, keepdims=True)
    zy = yb @ w_y / np.linalg.norm(yb @ w_y, axis=1, keepdims=True)
    rs = 0.5 * (_hand_rs(xb, zx, 0.5) + _hand_rs(yb, zy, 0.5))
    cca = float(np.sum(zx * zy)) / 2
    got = csa.refine_loss(torch.tensor(xb), torch.tensor(yb), torch.tensor(w_x), torch.tensor(w_y), rs_lambda=3.0,
                          lambda_cca=0.7, rs_kwargs={"levels": 1, "tau": 0.5, "weighting": "none"})
    assert rs > 1e-3 and abs(cca) > 1e-3  # both terms matter in this case
    assert got.item() == pytest.approx(3.0 * rs - 0.7 * cca, rel=1e-10)


def test_lambda_changes_the_refined_weights() -> None:
    x, y, _ = _planted(n=400, dx=8, dy=6)
    refined = {}
    for lam in (0.0, 10.0, 20.0):
        csa = CSA.fit(x, y, sim_dim=4)
        csa.refine(x, y, rs_lambda=lam, epochs=3, lr=5e-3, batch_size=100, seed=1, progress=False)
        refined[lam] = csa.w_x.clone()
    for a, b in ((0.0, 10.0), (10.0, 20.0)):
        assert (refined[a] - refined[b]).norm() > 1e-3 * refined[a].norm(), (a, b)


def test_refinement_moves_a_well_conditioned_fit() -> None:
    x, y, _ = _planted(n=2000, dx=8, dy=6)
    fit = CSA.fit(x, y, sim_dim=4)
    refined = CSA.fit(x, y, sim_dim=4)
    refined.refine(x, y, epochs=3, lr=5e-3, batch_size=500, seed=0, progress=False)
    # the refinement re-sorts the dimensions: compare each refined direction with its closest fitted one (± sign)
    before, after = torch.nn.functional.normalize(fit.w_x, dim=0), torch.nn.functional.normalize(refined.w_x, dim=0)
    closest = (after.T @ before).abs().max(dim=1).values
    assert (closest < 1 - 1e-4).any(), closest
    assert not torch.allclose(refined.encode_image(x[:50]), fit.encode_image(x[:50]), atol=1e-3)


def _smoke_like(n: int, dx: int = 320, dy: int = 384, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired features with a 16-d shared signal and an anisotropic spectrum, like the smoke run's 320/384-d layers."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 16, generator=g, dtype=torch.float64)
    x = z @ torch.randn(16, dx, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, dx, generator=g,
                                                                                      dtype=torch.float64)
    y = z @ torch.randn(16, dy, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, dy, generator=g,
                                                                                      dtype=torch.float64)
    return ((x * torch.logspace(0, -3, dx, dtype=torch.float64)).float(),
            (y * torch.logspace(0, -3, dy, dtype=torch.float64)).float())


def _fit_bytes(x: torch.Tensor, y: torch.Tensor, threads: int, refine: bool) -> bytes:
    """The CSA (and CSA + R_S) buffers fitted with the caller running ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        csa = CSA.fit(x, y, sim_dim=320)
        if refine:
            csa.refine(x, y, epochs=2, progress=False)
        assert torch.get_num_threads() == threads  # the fit restores the caller's thread count
    finally:
        torch.set_num_threads(previous)
    return b"".join(t.numpy().tobytes() for t in csa.state_dict().values())


@pytest.mark.parametrize("n", [40, 1200])
def test_csa_fit_bytes_do_not_depend_on_thread_count(n: int) -> None:
    # n = 40 is the smoke run's degenerate regime (d >= n), where 1 vs 2 BLAS threads used to change w by thousands
    x, y = _smoke_like(n)
    for refine in (False, True):
        one = _fit_bytes(x, y, 1, refine)
        assert _fit_bytes(x, y, 2, refine) == one and _fit_bytes(x, y, 4, refine) == one


def test_degenerate_fit_keeps_only_determined_directions() -> None:
    x, y = _smoke_like(40)
    res = fit_cca(x, y, dim=320)
    assert res.degenerate and res.ridge_x > 0 and res.ridge_y > 0
    assert res.w_x.shape == (320, 39) and res.w_y.shape == (384, 39)  # the centred data span n - 1 directions
    assert float(res.w_x.abs().max()) < 100  # no weights blown up along directions the data never visited
    info = res.fit_info(320)
    assert info == {"degenerate": True, "ridge_x": res.ridge_x, "ridge_y": res.ridge_y, "requested_dim": 320,
                    "kept_dim": 39}
    full = fit_cca(*_planted(n=2000)[:2], dim=5)
    assert not full.degenerate and full.ridge_x == 0 and full.w_x.shape[1] == 5
    # sign convention: the largest entry of each whitened direction is positive, whatever the SVD returned
    assert CSA.fit(x, y, sim_dim=320).fit_info == info


def test_rs_refinement_moves_the_degenerate_fit() -> None:
    # the released refinement (10 Adam steps at lr 5e-4) must change the cross-modal similarities; with the old 1e-6
    # ridge and all 320 directions kept, |w| reached ~500 here and the same steps moved them by < 1e-4
    x, y = _smoke_like(40)
    x_test, y_test = _smoke_like(200, seed=4)
    csa = CSA.fit(x, y, sim_dim=320)
    before = csa.encode_image(x_test) @ csa.encode_text(y_test).T  # invariant to the refinement's column reordering
    csa.refine(x, y, epochs=10, lr=5e-4, progress=False)
    after = csa.encode_image(x_test) @ csa.encode_text(y_test).T
    assert float((after - before).abs().max()) > 1e-3
