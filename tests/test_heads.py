"""Heads and the head-pair aligner (docs/method.md §4.1, §4.2): shapes, the released dead gate, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from structure_align.heads import HeadAligner, LinearHead, MLPHead, ReleasedResLowRankHead, build_head, load_aligner
from structure_align.io import FileFormatError


@pytest.mark.parametrize("kind,opts,cls", [("linear", {}, LinearHead), ("mlp", {"hidden": 7}, MLPHead),
                                           ("mlp", {"residual": True, "dropout": 0.1}, MLPHead),
                                           ("released_mlp", {"rank": 4}, ReleasedResLowRankHead)])
def test_build_head_shapes(kind: str, opts: dict, cls: type) -> None:
    torch.manual_seed(0)
    head = build_head(kind, 10, 6, **opts)
    assert isinstance(head, cls)
    assert head(torch.randn(5, 10)).shape == (5, 6)


def test_linear_head_has_bias_and_mlp_is_nonlinear() -> None:
    torch.manual_seed(0)
    assert LinearHead(4, 3).proj.bias is not None
    mlp = MLPHead(4, 3, hidden=16)
    x = torch.randn(8, 4)
    # a linear map satisfies f(2x) - f(0) = 2(f(x) - f(0)); the GELU MLP must not
    zero = mlp(torch.zeros(1, 4))
    assert not torch.allclose(mlp(2 * x) - zero, 2 * (mlp(x) - zero), atol=1e-4)


def test_mlp_residual_adds_linear_skip() -> None:
    torch.manual_seed(0)
    mlp = MLPHead(4, 3, hidden=5, residual=True)
    x = torch.randn(6, 4)
    expected = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x))) + x @ mlp.skip.weight.T
    assert torch.allclose(mlp(x), expected, atol=1e-6)


def test_build_head_rejects_unknown_kind_and_option() -> None:
    with pytest.raises(ValueError, match="unknown head"):
        build_head("conv", 4, 4)
    with pytest.raises(ValueError, match="rank"):
        build_head("linear", 4, 4, rank=3)


def test_released_head_dead_gate_is_bias_free_linear_with_zero_grads() -> None:
    torch.manual_seed(0)
    head = ReleasedResLowRankHead(12, 8, rank=4, dropout=0.1)
    head.train()
    x = torch.randn(16, 12)
    out = head(x)
    assert torch.allclose(out, x @ head.proj.weight.T, atol=1e-6)
    # orthogonal init: the rows of P (8 x 12) are orthonormal
    assert torch.allclose(head.proj.weight @ head.proj.weight.T, torch.eye(8), atol=1e-5)
    out.pow(2).sum().backward()
    for p in (head.down.weight, head.up.weight, head.gate_logit):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(head.proj.weight.grad) > 0
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    opt.step()
    assert head.gate_logit.item() == -math.inf
    assert torch.count_nonzero(head.up.weight) == 0


def test_released_head_open_gate_trains_the_branch() -> None:
    torch.manual_seed(0)
    head = ReleasedResLowRankHead(12, 8, rank=4, dropout=0.0, gate_init=0.5)
    x = torch.randn(16, 12)
    head(x).pow(2).sum().backward()
    assert torch.count_nonzero(head.up.weight.grad) > 0  # W2 starts at zero but gets gradient through an open gate
    torch.optim.SGD(head.parameters(), lr=0.1).step()
    assert not torch.allclose(head(x), x @ head.proj.weight.T, atol=1e-5)


def test_aligner_outputs_are_unit_norm() -> None:
    torch.manual_seed(0)
    aligner = HeadAligner.build("linear", 10, 7, d_out=5)
    assert torch.allclose(aligner.encode_image(torch.randn(4, 10)).norm(dim=1), torch.ones(4), atol=1e-6)
    assert torch.allclose(aligner.encode_text(torch.randn(4, 7)).norm(dim=1), torch.ones(4), atol=1e-6)


@pytest.mark.parametrize("kind,opts", [("linear", {}), ("mlp", {"hidden": 9, "residual": True}),
                                       ("released_mlp", {"rank": 3}),
                                       ("released_mlp", {"rank": 3, "gate_init": 0.2})])
def test_head_aligner_save_load_round_trip(tmp_path, kind: str, opts: dict) -> None:
    torch.manual_seed(0)
    aligner = HeadAligner.build(kind, 10, 7, d_out=5, **opts).eval()
    path = tmp_path / "heads.safetensors"
    aligner.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["aligner"] == "heads" and json.loads(meta["spec"])["image"]["options"] == opts
    loaded = load_aligner(path)
    assert isinstance(loaded, HeadAligner) and type(loaded.image_head) is type(aligner.image_head)
    x, y = torch.randn(6, 10), torch.randn(6, 7)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), aligner.encode_image(x))
        assert torch.equal(loaded.encode_text(y), aligner.encode_text(y))
    assert not [p for p in tmp_path.iterdir() if p.name != "heads.safetensors"]  # no temp file left


def test_load_aligner_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileFormatError, match="missing.safetensors"):
        load_aligner(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_aligner(bad)


def test_save_is_byte_reproducible(tmp_path):
    """Equal weights give identical files (DVC hashes and Snakemake checksums rely on it)."""
    from structure_align.heads import HeadAligner

    torch.manual_seed(0)
    aligner = HeadAligner.build("linear", 6, 5, d_out=4)
    aligner.save(tmp_path / "a.safetensors")
    aligner.save(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
