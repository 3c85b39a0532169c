"""``timm:<model name>``: timm Vision Transformers, CLS token of every block (docs/method.md §2, the released default
``vit_large_patch14_dinov2.lvd142m``).

Layers are the output of each block after its MLP residual (forward hooks on ``model.blocks`` during timm's own
``forward_intermediates`` pass, :mod:`.blocks`: each output is pooled as it is produced), the same points as the
released code's ``blocks.{i}.add_1`` return nodes; no embedding entry, no final norm. Preprocessing
is timm's eval transform from ``resolve_model_data_config`` (for DINOv2 lvd142m: 518 px, bicubic, ImageNet stats),
with a forced RGB conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .base import Encoder
from .blocks import pooled_block_outputs
from .registry import register_family


class TimmViTEncoder(Encoder):
    """CLS (first prefix) token of each block of a timm ViT."""

    modality = "vision"
    pooling = "cls"

    def __init__(self, model: torch.nn.Module, transform: Any, *, name: str, description: str = "") -> None:
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
            raise TypeError(f"{name}: timm model {type(model).__name__} has no forward_intermediates/blocks; only "
                            f"ViT-style models are supported")
        if int(getattr(model, "num_prefix_tokens", 0)) < 1 or getattr(model, "cls_token", None) is None:
            raise ValueError(f"{name}: the model has no CLS token (global-pool ViT); CLS pooling is undefined")
        self.model = model.eval()
        self.transform = transform
        self.name, self.description = name, description
        n_blocks = len(model.blocks)
        self.layer_names = [f"blocks.{i}" for i in range(n_blocks)]
        self.embed_dims = [int(model.embed_dim)] * n_blocks

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """timm's eval transform of this model's pretrained config."""
        return torch.stack([self.transform(im.convert("RGB")) for im in images])

    def forward_layers(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """CLS token of every block output (no final norm), pooled block by block; ``indices=1``: timm keeps only
        the last block's tokens, the hooks take every block's CLS token."""
        with pooled_block_outputs(list(self.model.blocks), lambda h: h[:, 0]) as feats:
            self.model.forward_intermediates(batch.to(self.device), indices=1, norm=False, output_fmt="NLC",
                                             intermediates_only=True)
        return feats


@register_family("timm", modality="vision", description="timm ViTs via forward_intermediates, CLS token per block")
def load_timm_encoder(spec: str, *, pretrained: bool = True, **model_kwargs: Any) -> TimmViTEncoder:
    """``timm.create_model(spec, pretrained=...)`` plus its eval transform. ``pretrained=True`` needs the hub (or
    a populated HF cache); tests pass ``pretrained=False`` and small ``model_kwargs`` (e.g. ``depth=2``)."""
    import timm
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model(spec, pretrained=pretrained, num_classes=0, **model_kwargs)
    data_cfg = resolve_model_data_config(model)
    transform = create_transform(**data_cfg, is_training=False)
    tag = "pretrained" if pretrained else "random init"
    return TimmViTEncoder(model, transform, name=f"timm:{spec}", description=f"timm {spec} ({tag})")
