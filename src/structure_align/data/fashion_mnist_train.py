"""Fashion-MNIST's training split as a labelled pool for the in-domain analysis (docs/analysis.md "in_domain").

The same builder as ``fashion_mnist`` on the train IDX files (60,000 images, disjoint from the 10,000 test images
that ``fashion_mnist`` evaluates on): a seeded class-stratified subset, materialised as RGB PNGs. Its manifest is a
zero-shot one (labels, class names, the same prompt templates), so its text features hold one row per
(class, template) and the in-domain sampler can pair an image with the templated caption of its class. Rows are
marked ``split = train``; the sampler still checks image content against the test set (docs/analysis.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from .fashion_mnist import SOURCE, build_fashion_mnist
from .registry import DatasetInfo, register_dataset


@register_dataset("fashion_mnist_train", sources=SOURCE, task="zeroshot",
                  description="Fashion-MNIST train images (stratified seeded subset), the in-domain labelled pool",
                  options={"size": 500})
def build_fashion_mnist_train(resources_dir: Path, images_dir: Path, *, limit: int | None = None, seed: int = 0,
                              size: int | None = 500) -> tuple[pd.DataFrame, DatasetInfo]:
    """``min(size, limit)`` train-split images (None = all 60,000), stratified by class and seeded."""
    df, info = build_fashion_mnist(resources_dir, images_dir, limit=limit, seed=seed, size=size, split="train")
    df["split"] = "train"
    info = dataclasses.replace(info, name="fashion_mnist_train",
                               description="Fashion-MNIST train IDX, seeded class-stratified subset (in-domain pool)")
    return df, info
