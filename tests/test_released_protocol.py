"""Released protocol details settled in docs/method.md §11 (issue 21 item 8): the validation loss is the
batch-size-weighted mean over batches (torchmetrics ``MeanMetric.update(loss, weight=batch size)``), and the CLIP
reference row resizes as the released CLIP evaluation does."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from structure_align.heads import HeadAligner
from structure_align.train import _batch_loss, _mean_loss
from structure_align.trainconfig import TrainConfig


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randn(n, 6, generator=g)


def test_validation_loss_weights_batches_by_their_rows() -> None:
    torch.manual_seed(0)
    aligner = HeadAligner.build("linear", 8, 6, 8)
    cfg = TrainConfig(head="linear", dim=8, rs_lambda=1.0, batch_size=32, epochs=1, patience=1, seed=0)
    x, y = _data(40)  # batches of 32 and 8 rows
    aligner.eval()
    with torch.no_grad():
        a, pa = _batch_loss(aligner, x[:32], y[:32], 1.0, cfg)
        b, pb = _batch_loss(aligner, x[32:], y[32:], 1.0, cfg)
    total, parts = _mean_loss(aligner, x, y, 1.0, cfg)
    assert math.isclose(total, (32 * float(a) + 8 * float(b)) / 40, rel_tol=1e-12)
    assert not math.isclose(total, (float(a) + float(b)) / 2, rel_tol=1e-6)  # not the plain mean of the batches
    assert math.isclose(parts["clip"], (32 * pa["clip"] + 8 * pb["clip"]) / 40, rel_tol=1e-12)
    assert math.isclose(parts["rs"], (32 * pa["rs"] + 8 * pb["rs"]) / 40, rel_tol=1e-12)
    # equal batches: exactly the plain mean, as computed before (the offline default's single validation batch)
    single, _ = _mean_loss(aligner, x[:32], y[:32], 1.0, cfg)
    assert single == float(a)


def test_clip_reference_preprocessing_is_the_released_torchvision_resize() -> None:
    """The released CLIP evaluation: ``Resize((336, 336))`` (bilinear), ``ToTensor``, CLIP mean/std."""
    import numpy as np
    from PIL import Image

    transforms = pytest.importorskip("torchvision.transforms")
    from structure_align.encoders.paper import CLIP_MEAN, CLIP_STD, ClipImageEncoder

    model = SimpleNamespace(eval=lambda: model, config=SimpleNamespace(
        projection_dim=4, vision_config=SimpleNamespace(image_size=24)))
    enc = ClipImageEncoder(model, name="clip-image:test")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (50, 37, 3), dtype=np.uint8)) for _ in range(2)]
    released = transforms.Compose([transforms.Resize((24, 24)), transforms.ToTensor(),
                                   transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    expected = torch.stack([released(im) for im in images])
    assert torch.allclose(enc.preprocess(images), expected, atol=1e-6)
