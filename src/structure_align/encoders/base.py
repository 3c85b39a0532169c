"""The ``Encoder`` interface every registered encoder implements (docs/design.md "Encoders").

An encoder turns a batch of PIL images (vision) or strings (text) into one pooled ``[B, d_l]`` tensor per layer.
``preprocess``/``tokenize`` run on CPU (they may run in DataLoader workers); ``forward_layers`` runs on
``self.device`` and returns tensors on that device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class Encoder(ABC):
    """Base class: subclasses set the attributes in ``__init__`` and implement the modality's methods.

    Attributes:
        name: registry name (``effnet-lite0``, ``timm:vit_small_patch14_dinov2.lvd142m`` ...).
        modality: ``vision`` or ``text``.
        layer_names: one readable name per returned layer, in output order.
        pooling: how each layer is pooled (``cls``, ``gap``, ``masked_mean``).
        embed_dims: width of each returned layer (known without a forward pass).
        description: one honest line about the model (what it is, where its weights come from).
        model: the underlying ``torch.nn.Module`` (in eval mode).
    """

    name: str
    modality: str
    layer_names: list[str]
    pooling: str
    embed_dims: list[int]
    description: str = ""
    model: torch.nn.Module
    device: torch.device = torch.device("cpu")

    @property
    def n_layers(self) -> int:
        """Number of layers ``forward_layers`` returns."""
        return len(self.layer_names)

    def to(self, device: torch.device | str) -> Encoder:
        """Move the model to ``device`` (in place) and remember it for ``forward_layers`` inputs."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Vision encoders: PIL images -> a ``[B, 3, H, W]`` float tensor on CPU."""
        raise TypeError(f"encoder {self.name!r} is a {self.modality} encoder and has no preprocess()")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Text encoders: strings -> a dict of CPU tensors (``input_ids``, ``attention_mask`` ...)."""
        raise TypeError(f"encoder {self.name!r} is a {self.modality} encoder and has no tokenize()")

    @abstractmethod
    def forward_layers(self, batch: Any) -> list[torch.Tensor]:
        """Pooled features of every layer for one preprocessed batch: a list of ``[B, d_l]`` tensors."""

    def info(self) -> dict[str, Any]:
        """JSON-serialisable description written into feature-file metadata."""
        return {"name": self.name, "modality": self.modality, "layer_names": list(self.layer_names),
                "pooling": self.pooling, "embed_dims": list(self.embed_dims), "description": self.description}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, "
                f"n_layers={self.n_layers}, pooling={self.pooling!r})")


def _to_device_batch(batch: Any, device: torch.device) -> Any:
    """Move a tensor or a dict of tensors to ``device`` (non-blocking when the source is pinned)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    raise TypeError(f"expected a tensor or a dict of tensors, got {type(batch).__name__}")


class ResizeCropNormalize:
    """Eval transform without torchvision: RGB, resize the shorter side, centre-crop, scale to [0,1], normalise.

    Picklable (DataLoader workers) and identical to torchvision's ``Resize(int)/CenterCrop/ToTensor/Normalize`` on PIL
    input, which also resizes through PIL.
    """

    def __init__(self, resize: int, crop: int, mean: Sequence[float], std: Sequence[float],
                 interpolation: str = "bicubic") -> None:
        if interpolation not in _PIL_INTERPOLATION:
            raise ValueError(f"unknown interpolation {interpolation!r}; choose from {sorted(_PIL_INTERPOLATION)}")
        self.resize, self.crop, self.interpolation = int(resize), int(crop), interpolation
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> ``[3, crop, crop]`` float32 tensor."""
        img = image.convert("RGB")
        w, h = img.size
        # round like torchvision's Resize(int): the shorter side becomes exactly `resize`
        new_w, new_h = (self.resize, max(1, int(self.resize * h / w))) if w <= h else \
            (max(1, int(self.resize * w / h)), self.resize)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), _PIL_INTERPOLATION[self.interpolation])
        left = round((new_w - self.crop) / 2.0)
        top = round((new_h - self.crop) / 2.0)
        img = img.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Stack a list of images into ``[B, 3, crop, crop]``."""
        return torch.stack([self(im) for im in images])
