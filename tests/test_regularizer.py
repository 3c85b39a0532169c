"""Tests of the STRUCTURE regulariser R_S (docs/method.md §5.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from structure_align.regularizer import level_divergence, safe_normalize, structure_regularizer


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def _features(b: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype)


def _reference_rs(x, a, *, levels=1, tau=0.05, weighting="none", divergence="code", margin=0.0, eps=1e-12):
    """Literal definition: fresh matrix_power per level, F.kl_div as in the released code."""
    def prep(z):
        z = F.normalize(z, dim=1)
        return z - z.mean(0, keepdim=True)

    px = torch.softmax(prep(x.detach()) @ prep(x.detach()).T / tau, dim=1)
    qa = torch.softmax(prep(a) @ prep(a).T / tau, dim=1)
    total = 0.0
    for level in range(1, levels + 1):
        p, q = torch.matrix_power(px, level), torch.matrix_power(qa, level)
        m = 0.5 * (p + q)
        if divergence == "code":
            d = 0.5 * (F.kl_div((q + eps).log(), m + eps, reduction="batchmean")
                       + F.kl_div((p + eps).log(), m + eps, reduction="batchmean"))
        else:
            n = p.shape[0]
            d = 0.5 * ((p * ((p + eps).log() - (m + eps).log())).sum() / n
                       + (q * ((q + eps).log() - (m + eps).log())).sum() / n)
        d = F.relu(d - margin)
        total = total + (d if weighting == "none" else d / level)
    return total / levels


@pytest.mark.parametrize("divergence", ["code", "js"])
def test_zero_for_identical_rotated_and_scaled_spaces(divergence):
    x = _features(40, 12, 0)
    assert structure_regularizer(x, x.clone(), divergence=divergence).item() == pytest.approx(0.0, abs=1e-9)
    rotated = x @ _orthogonal(12, 1)
    assert structure_regularizer(x, rotated, divergence=divergence, levels=3).item() == pytest.approx(0.0, abs=1e-9)
    # a wider target space: rows of R orthonormal, so x R (x R)^T = x x^T
    semi = _orthogonal(20, 2)[:12]
    assert structure_regularizer(x, x @ semi, divergence=divergence).item() == pytest.approx(0.0, abs=1e-9)
    assert structure_regularizer(7.5 * x, x, divergence=divergence).item() == pytest.approx(0.0, abs=1e-9)
    # float32 path too (rounding only)
    x32 = x.float()
    assert structure_regularizer(x32, x32 @ _orthogonal(12, 3).float()).item() == pytest.approx(0.0, abs=1e-5)


def test_nonzero_for_unrelated_spaces():
    x, a = _features(40, 12, 0), _features(40, 8, 1)
    assert structure_regularizer(x, a).item() > 1e-4


def test_code_and_js_differ_and_js_is_bounded():
    x, a = _features(50, 10, 3), _features(50, 10, 4)
    code = structure_regularizer(x, a, tau=0.01, divergence="code").item()
    js = structure_regularizer(x, a, tau=0.01, divergence="js").item()
    assert 0.0 < js <= math.log(2.0)
    assert abs(code - js) > 1e-3 * max(code, js)


def test_divergences_on_disjoint_distributions_by_hand():
    # P = I, Q = a cyclic permutation: every row of P and Q has disjoint support, M puts ½ on two cells.
    p = torch.eye(3, dtype=torch.float64)
    q = p[[1, 2, 0]]
    eps = 1e-12
    # js: ½[KL(P‖M) + KL(Q‖M)] = ½[ln 2 + ln 2] per row (up to eps inside the logs)
    js = level_divergence(p, q, divergence="js", eps=eps).item()
    assert js == pytest.approx(math.log(2.0), rel=1e-9)
    # code: ½[KL(M+ε‖Q+ε) + KL(M+ε‖P+ε)]; per row each KL has two ½-cells: ½ ln(½/1) and ½ ln(½/ε)
    # (plus the ε-only cell: ε ln(ε/ε) = 0)
    half = 0.5 + eps
    kl = half * math.log(half / (1 + eps)) + half * math.log(half / eps)
    code = level_divergence(p, q, divergence="code", eps=eps).item()
    assert code == pytest.approx(kl, rel=1e-9)
    assert code > 10 * math.log(2.0)  # not bounded by ln 2
    for div in ("code", "js"):
        assert level_divergence(p, p.clone(), divergence=div).item() == pytest.approx(0.0, abs=1e-12)


def _hand_transition(z: np.ndarray, tau: float) -> np.ndarray:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    z = z - z.mean(axis=0, keepdims=True)
    s = z @ z.T / tau
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _hand_code_div(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> float:
    m = 0.5 * (p + q) + eps
    kl_mq = np.sum(m * (np.log(m) - np.log(q + eps))) / p.shape[0]
    kl_mp = np.sum(m * (np.log(m) - np.log(p + eps))) / p.shape[0]
    return 0.5 * (kl_mq + kl_mp)


def test_levels_and_weighting_on_hand_checked_b3_case():
    x = np.array([[1.0, 0.0], [0.6, 0.8], [-0.8, 0.6]])
    a = np.array([[1.0, 0.2], [0.0, 1.0], [-1.0, -0.3]])
    tau = 0.5
    p, q = _hand_transition(x, tau), _hand_transition(a, tau)
    d1 = _hand_code_div(p, q)
    d2 = _hand_code_div(p @ p, q @ q)
    d3 = _hand_code_div(p @ p @ p, q @ q @ q)
    xt, at = torch.tensor(x), torch.tensor(a)
    got = {(lv, w): structure_regularizer(xt, at, levels=lv, tau=tau, weighting=w).item()
           for lv in (1, 2, 3) for w in ("none", "inverse")}
    assert got[1, "none"] == pytest.approx(d1, rel=1e-10)
    assert got[1, "inverse"] == pytest.approx(d1, rel=1e-10)
    assert got[2, "none"] == pytest.approx((d1 + d2) / 2, rel=1e-10)
    assert got[2, "inverse"] == pytest.approx((d1 + d2 / 2) / 2, rel=1e-10)
    assert got[3, "inverse"] == pytest.approx((d1 + d2 / 2 + d3 / 3) / 3, rel=1e-10)
    assert d1 > d2 > 0  # the walks mix, so the hand case really distinguishes the levels


def _hand_variant_walk(z: np.ndarray, *, centering: str = "mean", center_first: bool = False,
                       distance: str = "cosine", tau: float = 0.5, gamma: float = 1.0) -> np.ndarray:
    """The random-walk matrix of docs/method.md §5.2 steps 1-3 for one option set, written out in numpy."""
    def centre(v: np.ndarray) -> np.ndarray:
        if centering == "none":
            return v
        c = v - v.mean(axis=0, keepdims=True)
        return c / v.std(axis=0, ddof=1, keepdims=True) if centering == "standard" else c

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    z = unit(centre(z)) if center_first else centre(unit(z))
    if distance == "rbf":
        s = np.array([[np.exp(-gamma * np.sum((zi - zj) ** 2)) for zj in z] for zi in z])
    else:
        if distance == "spearman":
            z = unit(np.array([rankdata(row) - 1.0 for row in z]))  # ranks 0..d-1 of each row's coordinates
        s = z @ z.T / tau
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# three 4-d rows per side (no ties after centring) on which every option changes the value, and on which ranks and
# argsort positions give different spearman similarities (with 3-d rows every off-diagonal rank product can coincide)
X3 = np.array([[0.6, 0.3, 0.0, 0.0], [0.8, 0.9, 0.6, 0.7], [0.5, 0.9, 0.8, 0.0]])
A3 = np.array([[0.9, 0.0, 0.7, 0.2], [0.9, 0.5, 0.3, 0.4], [0.0, 0.1, 0.7, 0.6]])


@pytest.mark.parametrize("options", [
    {"distance": "rbf"}, {"distance": "rbf", "gamma": 2.5}, {"distance": "spearman"},
    {"distance": "spearman", "tau": 0.2}, {"centering": "standard"}, {"centering": "none"},
    {"center_first": True}, {"centering": "standard", "center_first": True},
])
def test_variants_on_hand_checked_b3_case(options):
    """rbf, spearman and each centring against the numpy definition (as the b = 3 levels/weighting case)."""
    opts = {"tau": 0.5, **options}
    p, q = _hand_variant_walk(X3, **opts), _hand_variant_walk(A3, **opts)
    d1, d2 = _hand_code_div(p, q), _hand_code_div(p @ p, q @ q)
    xt, at = torch.tensor(X3), torch.tensor(A3)
    assert structure_regularizer(xt, at, **opts).item() == pytest.approx(d1, rel=1e-10)
    assert structure_regularizer(xt, at, levels=2, weighting="inverse", **opts).item() == pytest.approx(
        (d1 + d2 / 2) / 2, rel=1e-10)
    # the option matters on this case: the default (mean centring, cosine) gives another value
    default = _hand_code_div(_hand_variant_walk(X3, tau=opts["tau"]), _hand_variant_walk(A3, tau=opts["tau"]))
    assert d1 > 1e-4 and abs(d1 - default) > 1e-3 * d1, options


def test_margin_is_a_per_level_hinge():
    x, a = _features(30, 6, 5), _features(30, 6, 6)
    d1 = structure_regularizer(x, a, levels=1, tau=0.2).item()
    d2 = 2 * structure_regularizer(x, a, levels=2, tau=0.2).item() - d1
    assert d1 != pytest.approx(d2)
    margin = 0.5 * (d1 + d2)
    expected = 0.5 * (max(d1 - margin, 0.0) + max(d2 - margin, 0.0))
    got = structure_regularizer(x, a, levels=2, tau=0.2, margin=margin).item()
    assert got == pytest.approx(expected, rel=1e-9)
    assert got > 0
    assert structure_regularizer(x, a, tau=0.2, margin=d1 + 1.0).item() == 0.0


def test_gradients_reach_a_and_never_x():
    x = _features(20, 8, 7, torch.float32).requires_grad_(True)
    head = torch.nn.Linear(8, 5)
    rs = structure_regularizer(x, head(x), levels=2, weighting="inverse")
    rs.backward()
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    assert torch.isfinite(head.weight.grad).all()
    # the head's input was x, so x.grad is filled only through the head, never through R_S's x argument
    x2 = _features(20, 8, 7, torch.float32).requires_grad_(True)
    a = _features(20, 5, 8, torch.float32).requires_grad_(True)
    structure_regularizer(x2, a).backward()
    assert x2.grad is None
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


@pytest.mark.parametrize("divergence", ["code", "js"])
@pytest.mark.parametrize("levels", [1, 3])
def test_custom_backward_passes_gradcheck(divergence, levels):
    x = _features(7, 4, 9)
    a = _features(7, 3, 10).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: structure_regularizer(x, t, levels=levels, tau=0.5, divergence=divergence,
                                        weighting="inverse"), (a,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("divergence", ["code", "js"])
def test_incremental_powers_match_matrix_power_reference(divergence):
    x = _features(64, 16, 11)
    a1 = _features(64, 10, 12).requires_grad_(True)
    a2 = a1.detach().clone().requires_grad_(True)
    kw = {"levels": 4, "tau": 0.1, "weighting": "inverse", "divergence": divergence}
    got = structure_regularizer(x, a1, **kw)
    ref = _reference_rs(x, a2, **kw)
    got.backward()
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-8, atol=1e-14)


def test_float32_matches_reference_and_half_inputs_are_upcast():
    x = _features(96, 24, 13, torch.float32)
    a = _features(96, 16, 14, torch.float32)
    got = structure_regularizer(x, a, levels=3, weighting="inverse")
    ref = _reference_rs(x, a, levels=3, weighting="inverse")
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    half = structure_regularizer(x.half(), a.half(), levels=3, weighting="inverse")
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(
        structure_regularizer(x.half().float(), a.half().float(), levels=3, weighting="inverse").item(), rel=1e-6)


def test_invariant_to_a_joint_permutation_of_the_batch():
    x, a = _features(25, 6, 15), _features(25, 4, 16)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    assert structure_regularizer(x[perm], a[perm], levels=2).item() == pytest.approx(
        structure_regularizer(x, a, levels=2).item(), rel=1e-10)


def test_variants_run_and_are_zero_for_identical_inputs():
    x = _features(30, 6, 17)
    for kw in ({"distance": "rbf"}, {"distance": "spearman"}, {"centering": "standard"},
               {"centering": "none"}, {"center_first": True}, {"centering": "standard", "center_first": True}):
        assert structure_regularizer(x, x.clone(), **kw).item() == pytest.approx(0.0, abs=1e-9), kw
        assert structure_regularizer(x, _features(30, 6, 18), **kw).item() > 0, kw
    # spearman ranks ignore positive scaling of the rows
    assert structure_regularizer(x, 3.0 * x, distance="spearman").item() == pytest.approx(0.0, abs=1e-9)


def test_standard_centering_with_a_constant_dimension_stays_finite():
    x = _features(20, 5, 19)
    x[:, 2] = 0.0
    assert math.isfinite(structure_regularizer(x, _features(20, 4, 20), centering="standard").item())


def test_center_first_changes_the_result():
    x, a = _features(30, 6, 21) + 2.0, _features(30, 4, 22)
    assert structure_regularizer(x, a, center_first=True).item() != pytest.approx(
        structure_regularizer(x, a, center_first=False).item(), rel=1e-6)


def test_safe_normalize_skips_unit_rows_and_normalises_others():
    z = F.normalize(_features(5, 3, 23), dim=1)
    assert safe_normalize(z) is z
    w = 3.0 * z
    torch.testing.assert_close(safe_normalize(w), z)


@pytest.mark.parametrize("kwargs, match", [
    ({"levels": 0}, "levels"), ({"levels": 1.5}, "levels"), ({"tau": 0.0}, "tau"),
    ({"weighting": "log"}, "weighting"), ({"centering": "median"}, "centering"),
    ({"distance": "l1"}, "distance"), ({"divergence": "kl"}, "divergence"), ({"margin": -1.0}, "margin"),
    ({"eps": -1e-3}, "eps"), ({"eps": 0.0}, "eps"), ({"gamma": 0.0}, "gamma"),
])
def test_bad_options_are_rejected(kwargs, match):
    x = _features(8, 3, 24)
    with pytest.raises(ValueError, match=match):
        structure_regularizer(x, x, **kwargs)


def test_bad_shapes_are_rejected():
    x = _features(8, 3, 25)
    with pytest.raises(ValueError, match="same number of rows"):
        structure_regularizer(x, x[:5])
    with pytest.raises(ValueError, match="2-D"):
        structure_regularizer(x[0], x[0])
    with pytest.raises(ValueError, match="at least 1"):
        structure_regularizer(x[:0], x[:0])
    with pytest.raises(ValueError, match="divergence"):
        level_divergence(torch.eye(2), torch.eye(2), divergence="kl")


@pytest.mark.parametrize("centering", ["mean", "standard", "none"])
def test_a_single_row_batch_gives_zero_and_a_zero_gradient(centering):
    x = _features(1, 5, 26)
    a = _features(1, 3, 27).requires_grad_(True)
    rs = structure_regularizer(x, a, centering=centering, levels=2)
    assert rs.item() == 0.0
    rs.backward()
    assert a.grad is not None and torch.equal(a.grad, torch.zeros_like(a))
