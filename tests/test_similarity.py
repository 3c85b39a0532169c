"""Tests of layer similarity and layer selection (docs/method.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import structure_align.similarity as sim_mod
from structure_align.similarity import (
    choose_layers,
    cka,
    knn_indices,
    knn_k,
    last_layers,
    layer_scores,
    mutual_knn,
    score_subsample,
    similar_layers,
)


def _randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _on_circle(degrees: list[float]) -> torch.Tensor:
    t = np.deg2rad(np.asarray(degrees))
    return torch.tensor(np.stack([np.cos(t), np.sin(t)], axis=1), dtype=torch.float64)


def _naive_mutual_knn(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Independent reference: explicit neighbour sets via argsort of the cosine matrix, python set intersection."""
    def sets(x: np.ndarray) -> list[set[int]]:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]

    sa, sb = sets(a), sets(b)
    return float(np.mean([len(p & q) / k for p, q in zip(sa, sb, strict=True)]))


def test_knn_k_matches_the_spec_table():
    assert [knn_k(n) for n in (5000, 1000, 2500, 7500, 10000)] == [35, 20, 28, 40, 44]
    assert knn_k(5000, "sqrt") == 71
    assert knn_k(5000, "sturges") == 14
    assert knn_k(5000, 10) == 10
    # exact arithmetic at perfect cubes / squares / powers of two
    assert knn_k(1000, "rice") == 20 and knn_k(64, "rice") == 8
    assert knn_k(4096, "sqrt") == 64 and knn_k(4097, "sqrt") == 65
    assert knn_k(1024, "sturges") == 11 and knn_k(1025, "sturges") == 12


def test_knn_k_caps_rules_and_rejects_bad_values():
    assert knn_k(3, "rice") == 2
    with pytest.raises(ValueError, match="k=7"):
        knn_k(5, 7)
    with pytest.raises(ValueError, match="cube"):
        knn_k(100, "cube")
    with pytest.raises(ValueError, match="n >= 2"):
        knn_k(1)


def test_a_sample_is_never_its_own_neighbour():
    x = _randn(50, 4, 0)
    x = torch.cat([x, x])  # exact duplicates: the copy, not the row itself, must be the nearest
    idx = knn_indices(x, 5)
    rows = torch.arange(100)[:, None]
    assert not bool((idx == rows).any())
    assert bool((idx[:, 0] == (torch.arange(100) + 50) % 100).all())


def test_knn_indices_are_sorted_nearest_first_on_a_circle():
    x = _on_circle([0, 10, 30, 60, 100, 150])
    # 60° is 30° from 30° and 40° from 100°; 150° is 50° from 100° and 90° from 60°
    assert knn_indices(x, 2).tolist() == [[1, 2], [0, 2], [1, 3], [2, 4], [3, 5], [4, 3]]


def test_mutual_knn_hand_example():
    # k = 1 nearest neighbours by angle.  A: 0->1, 1->0, 2->1, 3->2, 4->3, 5->4
    a = _on_circle([0, 10, 30, 60, 100, 150])
    # B: 0->1, 1->2, 2->1, 3->2, 4->5, 5->4  -> rows 0, 2, 3, 5 agree: 4/6
    b = _on_circle([0, 45, 60, 80, 160, 175])
    assert mutual_knn(a, b, k=1) == pytest.approx(4 / 6)
    # k = 2: A = {1,2},{0,2},{1,3},{2,4},{3,5},{4,3}; B = {1,2},{2,3},{1,3},{2,1},{5,3},{4,3}
    # overlaps 2,1,2,1,2,2 -> 10/12
    assert mutual_knn(a, b, k=2) == pytest.approx(10 / 12)


def test_mutual_knn_is_one_for_identical_and_invariant_inputs():
    x = _randn(200, 16, 1)
    assert mutual_knn(x, x.clone()) == 1.0
    q, _ = torch.linalg.qr(_randn(16, 16, 2))
    assert mutual_knn(x, 5.0 * x @ q) == 1.0


def test_mutual_knn_matches_independent_reference_on_random_data():
    a = _randn(300, 20, 3)
    b = a[:, :9] + 0.5 * _randn(300, 9, 4)  # partial agreement so the score is neither 0 nor 1
    for k in (3, "rice"):
        kk = knn_k(300, k)
        got = mutual_knn(a, b, k)
        assert got == pytest.approx(_naive_mutual_knn(a.double().numpy(), b.double().numpy(), kk), abs=1e-12)
        assert 0.05 < got < 0.95


def test_layer_scores_equal_pairwise_mutual_knn_for_mixed_widths():
    a_layers = [_randn(150, d, 10 + i) for i, d in enumerate((32, 8, 20))]
    b_layers = [_randn(150, d, 20 + i) for i, d in enumerate((12, 40))]
    b_layers[1][:, :20] += 2 * a_layers[2]
    scores = layer_scores(a_layers, b_layers, k="rice")
    assert scores.shape == (3, 2)
    expected = np.array([[mutual_knn(a, b, "rice") for b in b_layers] for a in a_layers])
    np.testing.assert_array_equal(scores, expected)
    assert similar_layers(scores) == (2, 1)


def test_layer_scores_chunked_path_gives_identical_scores(monkeypatch):
    a_layers = [_randn(120, 10, 30), _randn(120, 6, 31)]
    b_layers = [_randn(120, 7, 32), a_layers[0] + 0.1 * _randn(120, 10, 33)]
    full = layer_scores(a_layers, b_layers, k=5)
    monkeypatch.setattr(sim_mod, "_CHUNK_BYTES", 120 * 4 * 7)  # 7-row chunks, several of them
    chunked = layer_scores(a_layers, b_layers, k=5)
    np.testing.assert_array_equal(full, chunked)
    monkeypatch.setattr(sim_mod, "_CHUNK_BYTES", 1 << 26)
    assert full[0, 1] > 0.5


def test_layer_scores_rejects_mismatched_rows_and_bad_values():
    with pytest.raises(ValueError, match=r"a_layers\[1\]"):
        layer_scores([_randn(10, 3, 0), _randn(11, 3, 1)], [_randn(10, 3, 2)])
    with pytest.raises(ValueError, match="b_layers have 9 rows|a_layers have 10 rows"):
        layer_scores([_randn(10, 3, 0)], [_randn(9, 3, 2)])
    bad = _randn(10, 3, 3)
    bad[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"b_layers\[0\] contains NaN"):
        layer_scores([_randn(10, 3, 0)], [bad])
    with pytest.raises(ValueError, match="metric"):
        layer_scores([_randn(10, 3, 0)], [_randn(10, 3, 1)], metric="svcca")


def _textbook_cka(a: np.ndarray, b: np.ndarray) -> float:
    n = a.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, lm = h @ (a @ a.T) @ h, h @ (b @ b.T) @ h
    return float(np.sum(k * lm) / (np.linalg.norm(k) * np.linalg.norm(lm)))


def test_cka_identity_invariances_and_textbook_value():
    a, b = _randn(60, 10, 40).double(), _randn(60, 6, 41).double()
    assert cka(a, a) == pytest.approx(1.0, abs=1e-12)
    q, _ = torch.linalg.qr(_randn(10, 10, 42).double())
    assert cka(a, a @ q) == pytest.approx(1.0, abs=1e-12)
    assert cka(a, b) == pytest.approx(cka(3.0 * a @ q, 0.2 * b), rel=1e-10)
    assert cka(a, b, normalize=False) == pytest.approx(_textbook_cka(a.numpy(), b.numpy()),
                                                       rel=1e-10)
    assert 0.0 < cka(a, b) < 0.9


def test_layer_scores_cka_matches_pairwise_cka(monkeypatch):
    a_layers = [_randn(80, d, 50 + i) for i, d in enumerate((9, 4, 12))]
    b_layers = [_randn(80, d, 60 + i) for i, d in enumerate((5, 12))]
    b_layers[1] += a_layers[2]
    expected = np.array([[cka(a, b) for b in b_layers] for a in a_layers])
    np.testing.assert_allclose(layer_scores(a_layers, b_layers, metric="cka"), expected, rtol=1e-10)
    monkeypatch.setattr(sim_mod, "_CHUNK_BYTES", 80 * 8 * 5 * 3 // 4)  # 3-column Gram blocks
    np.testing.assert_allclose(layer_scores(a_layers, b_layers, metric="cka"), expected, rtol=1e-10)


def test_choose_layers_last_and_similar_with_ties():
    scores = np.array([[0.1, 0.7, 0.2], [0.7, 0.3, 0.7]])
    assert last_layers(scores) == (1, 2)
    assert similar_layers(scores) == (0, 1)  # three tied maxima, the first in row-major order wins
    assert choose_layers(scores, "last") == (1, 2)
    assert choose_layers(scores, "similar") == (0, 1)
    assert choose_layers(torch.tensor(scores), "similar") == (0, 1)
    with pytest.raises(ValueError, match="choice"):
        choose_layers(scores, "best")
    with pytest.raises(ValueError, match="NaN"):
        similar_layers(np.array([[0.1, math.nan]]))


def test_score_subsample_is_seeded_and_bounded():
    np.testing.assert_array_equal(score_subsample(40, max_n=50, seed=1), np.arange(40))
    s1 = score_subsample(10_000, max_n=5000, seed=3)
    assert len(s1) == 5000 and len(np.unique(s1)) == 5000 and np.all(np.diff(s1) > 0)
    assert s1.min() >= 0 and s1.max() < 10_000
    np.testing.assert_array_equal(s1, score_subsample(10_000, max_n=5000, seed=3))
    assert not np.array_equal(s1, score_subsample(10_000, max_n=5000, seed=4))
    with pytest.raises(ValueError, match="max_n"):
        score_subsample(10, max_n=0, seed=0)
