"""Zero-shot and retrieval metrics on hand-computed examples (docs/method.md §7)."""

from __future__ import annotations

import math

import pytest
import torch

from structure_align.csa import CSA
from structure_align.evaluate import class_prototypes, retrieval, retrieval_aligner, zero_shot, zero_shot_aligner
from structure_align.heads import HeadAligner


def _unit(*vs: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(vs, dtype=torch.float32), dim=1)


def test_prototypes_average_normalised_templates() -> None:
    # class 0 has two templates of different length; normalising first makes them count equally
    text = torch.tensor([[10.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    protos = class_prototypes(text, [0, 0, 1], 2)
    s = 1 / math.sqrt(2)
    assert torch.allclose(protos, torch.tensor([[s, s], [0.6, 0.8]]), atol=1e-6)
    with pytest.raises(ValueError, match="no prompt"):
        class_prototypes(text, [0, 0, 0], 2)


def test_zero_shot_hand_example() -> None:
    # 6 classes, one prompt each along the axes e0..e5
    text = torch.eye(6)
    groups = list(range(6))
    img = torch.tensor([
        [1.0, 0.1, 0, 0, 0, 0],        # true 0 -> top1 hit
        [0, 1.0, 0.2, 0, 0, 0],        # true 1 -> top1 hit
        [0.5, 1.0, 0.4, 0.3, 0.2, 0],  # true 0 -> rank 2: top5 hit only
        [0, 0, 0, 1.0, 0, 0],          # true 3 -> top1 hit
        [0.5, 0.4, 0.3, 0.2, 0.1, 0],  # true 5 -> rank 6: miss in top5
    ])
    labels = [0, 1, 0, 3, 5]
    out = zero_shot(img, labels, text, groups, 6)
    assert out["top1"] == pytest.approx(100 * 3 / 5)
    assert out["top5"] == pytest.approx(100 * 4 / 5)
    # per-class accuracy over present classes: 0 -> 1/2, 1 -> 1, 3 -> 1, 5 -> 0
    assert out["macro_top1"] == pytest.approx(100 * (0.5 + 1 + 1 + 0) / 4)
    assert out["n_images"] == 5


def test_zero_shot_top5_nan_below_five_classes_and_bad_labels() -> None:
    out = zero_shot(torch.eye(3), [0, 1, 2], torch.eye(3), [0, 1, 2], 3)
    assert out["top1"] == 100.0 and math.isnan(out["top5"])
    with pytest.raises(ValueError, match="labels"):
        zero_shot(torch.eye(3), [0, 1, 3], torch.eye(3), [0, 1, 2], 3)


# Hand example: 3 images, 5 captions. Caption -> image: [0, 0, 1, 2, 2] (image 0 and 2 have two captions each).
IMG = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
TXT = _unit([0.9, 0.1, 0.0],   # c0 of img0: best img0
            [0.1, 0.2, 1.0],   # c1 of img0: ranks img2 > img1 > img0
            [0.8, 0.6, 0.0],   # c2 of img1: img0 > img1
            [0.0, 0.1, 0.9],   # c3 of img2: best img2
            [0.0, 0.9, 0.3])   # c4 of img2: img1 > img2
INDEX = [0, 0, 1, 2, 2]


def test_retrieval_standard_hand_example() -> None:
    out = retrieval(IMG, TXT, INDEX, ks=(1, 2, 3))
    # T2I ranks (0-based) in a gallery with each image once: c0 0, c1 2, c2 1, c3 0, c4 1
    assert out["t2i_r1"] == pytest.approx(100 * 2 / 5)
    assert out["t2i_r2"] == pytest.approx(100 * 4 / 5)
    assert out["t2i_r3"] == pytest.approx(100.0)
    # I2T, image scores over captions (normalised rows, so compare per image column):
    # img0: c0 .994 best and relevant -> rank 0
    # img1: c4 .949, c2 .6, c0 .11, ... relevant c2 -> 1 irrelevant above -> rank 1
    # img2: c3 .994 relevant best -> rank 0
    assert out["i2t_r1"] == pytest.approx(100 * 2 / 3)
    assert out["i2t_r2"] == pytest.approx(100.0)
    assert out["n_images"] == 3 and out["n_texts"] == 5


def test_retrieval_duplicate_gallery_hand_example() -> None:
    out = retrieval(IMG, TXT, INDEX, duplicate_gallery=True, ks=(1, 2, 3, 4))
    # gallery copies: img0 x2, img1 x1, img2 x2. Irrelevant copies above the right image per caption:
    # c0: 0; c1: img2 (2 copies) + img1 (1) = 3; c2: img0 (2) = 2; c3: 0; c4: img1 (1) = 1
    assert out["t2i_r1"] == pytest.approx(100 * 2 / 5)
    assert out["t2i_r2"] == pytest.approx(100 * 3 / 5)
    assert out["t2i_r3"] == pytest.approx(100 * 4 / 5)
    assert out["t2i_r4"] == pytest.approx(100.0)
    # I2T queries repeated per caption row: img0 twice (rank 0), img1 once (rank 1), img2 twice (rank 0)
    assert out["i2t_r1"] == pytest.approx(100 * 4 / 5)
    assert out["i2t_r2"] == pytest.approx(100.0)


def test_retrieval_chunking_does_not_change_results() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(13, 4, generator=g), torch.randn(30, 4, generator=g)
    index = torch.randint(0, 13, (30,), generator=g)
    for dup in (False, True):
        assert retrieval(img, txt, index, duplicate_gallery=dup, chunk_size=4) == \
            retrieval(img, txt, index, duplicate_gallery=dup, chunk_size=1000)


def test_retrieval_input_errors() -> None:
    with pytest.raises(ValueError, match="text_image_index"):
        retrieval(IMG, TXT, [0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="dim"):
        retrieval(IMG, TXT[:, :2], INDEX)


def test_retrieval_aligner_perfect_pairs() -> None:
    torch.manual_seed(0)
    aligner = HeadAligner.build("linear", 6, 6, d_out=6)
    with torch.no_grad():
        for head in (aligner.image_head, aligner.text_head):
            head.proj.weight.copy_(torch.eye(6))
            head.proj.bias.zero_()
    feats = torch.eye(6)
    out = retrieval_aligner(aligner, feats, feats, torch.arange(6))
    assert out["i2t_r1"] == 100.0 and out["t2i_r1"] == 100.0


def test_zero_shot_aligner_raw_prototypes_follow_released_csa_path() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 5, generator=g), torch.randn(200, 4, generator=g)
    y = y + x[:, :4]
    csa = CSA.fit(x, y, sim_dim=3)
    text = 3.0 * torch.randn(6, 4, generator=g) + 2.0
    groups = [0, 0, 1, 1, 2, 2]
    imgs, labels = x[:30], torch.randint(0, 3, (30,), generator=g)
    raw = zero_shot_aligner(csa, imgs, labels, text, groups, 3, raw_prototypes=True)
    # expected by hand: prototypes in raw space, then the CCA text transform
    protos = torch.nn.functional.normalize(torch.stack([
        torch.nn.functional.normalize(text[i:i + 2], dim=1).mean(0) for i in (0, 2, 4)]), dim=1)
    expected = zero_shot(csa.encode_image(imgs), labels, csa.encode_text(protos), [0, 1, 2], 3)
    assert raw == expected
    joint = zero_shot(csa.encode_image(imgs), labels, csa.encode_text(text), groups, 3)
    assert zero_shot_aligner(csa, imgs, labels, text, groups, 3) == joint
    assert raw != joint  # the two prototype paths give different classifiers on this data
