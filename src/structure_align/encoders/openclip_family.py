"""open_clip towers: ``openclip-image:<arch>:<pretrained tag>`` and ``openclip-text:<arch>:<pretrained tag>``.

* image tower: CLS token of every transformer block (no ``ln_post``), open_clip's own eval transform;
* text tower: masked mean over the non-padding tokens (open_clip pads with id 0) of every block output, no
  ``ln_final`` (docs/method.md §2's text pooling; CLIP's own EOT pooling is the final projection, not used here).

Block outputs are pooled as they are produced (forward hooks, :mod:`.blocks`) during open_clip's own
``forward_intermediates`` pass, which is asked for the last block only.

A tag of ``none`` builds a randomly initialised model (tests). Real tags (``laion2b_s34b_b79k`` ...) need the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .base import Encoder
from .blocks import pooled_block_outputs
from .pooling import masked_mean
from .registry import register_family


def _parse(spec: str) -> tuple[str, str | None]:
    arch, sep, tag = spec.partition(":")
    if not arch or not sep or not tag:
        raise ValueError(f"open_clip encoder spec must be '<arch>:<pretrained tag>' (tag 'none' for random init), "
                         f"got {spec!r}")
    return arch, (None if tag.lower() == "none" else tag)


def _create(spec: str, **kwargs: Any) -> tuple[torch.nn.Module, Any, str, str | None]:
    import open_clip

    arch, tag = _parse(spec)
    model, _, preprocess_val = open_clip.create_model_and_transforms(arch, pretrained=tag, **kwargs)
    return model.eval(), preprocess_val, arch, tag


def _nlc(transformer: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A block output in [batch, tokens, width] layout (open_clip transformers may run sequence-first)."""
    return h if getattr(transformer, "batch_first", True) else h.transpose(0, 1)


def _transformer_blocks(module: torch.nn.Module, what: str) -> int:
    resblocks = getattr(getattr(module, "transformer", None), "resblocks", None)
    if resblocks is None:
        raise TypeError(f"open_clip {what} tower {type(module).__name__} is not a plain transformer; only ViT "
                        f"towers are supported")
    return len(resblocks)


class OpenClipImageEncoder(Encoder):
    """CLS token per block of an open_clip ViT image tower."""

    modality = "vision"
    pooling = "cls"

    def __init__(self, model: torch.nn.Module, transform: Any, *, name: str, description: str = "") -> None:
        self.model, self.transform = model, transform
        self.name, self.description = name, description
        visual = model.visual
        n = _transformer_blocks(visual, "image")
        self.layer_names = [f"visual.resblocks.{i}" for i in range(n)]
        self.embed_dims = [int(visual.transformer.width)] * n

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """open_clip's eval transform for this architecture/tag."""
        return torch.stack([self.transform(im.convert("RGB")) for im in images])

    def forward_layers(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """CLS token of every block (no ln_post)."""
        visual = self.model.visual
        with pooled_block_outputs(list(visual.transformer.resblocks),
                                  lambda h: _nlc(visual.transformer, h)[:, 0]) as feats:
            visual.forward_intermediates(batch.to(self.device), indices=1, intermediates_only=True,
                                         output_fmt="NLC", output_extra_tokens=True)
        return feats


class OpenClipTextEncoder(Encoder):
    """Masked mean per block of an open_clip text tower."""

    modality = "text"
    pooling = "masked_mean"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str, description: str = "") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.name, self.description = name, description
        text = getattr(model, "text", model)
        n = _transformer_blocks(text, "text")
        self.layer_names = [f"text.resblocks.{i}" for i in range(n)]
        self.embed_dims = [int(text.transformer.width)] * n

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """open_clip's tokenizer (fixed context length, pad id 0)."""
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def forward_layers(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Masked mean of every text block output (no ln_final)."""
        ids = batch["input_ids"].to(self.device)
        transformer = getattr(self.model, "text", self.model).transformer
        mask = batch["attention_mask"]
        with pooled_block_outputs(list(transformer.resblocks),
                                  lambda h: masked_mean(_nlc(transformer, h), mask)) as feats:
            self.model.forward_intermediates(text=ids, text_indices=1, intermediates_only=True)
        return feats


@register_family("openclip-image", modality="vision",
                 description="open_clip image tower <arch>:<pretrained tag>, CLS token per block")
def load_openclip_image(spec: str, **kwargs: Any) -> OpenClipImageEncoder:
    """Image tower of ``open_clip.create_model_and_transforms(arch, pretrained=tag)``."""
    model, preprocess, arch, tag = _create(spec, **kwargs)
    return OpenClipImageEncoder(model, preprocess, name=f"openclip-image:{spec}",
                                description=f"open_clip {arch} image tower ({tag or 'random init'})")


@register_family("openclip-text", modality="text",
                 description="open_clip text tower <arch>:<pretrained tag>, masked mean per block")
def load_openclip_text(spec: str, **kwargs: Any) -> OpenClipTextEncoder:
    """Text tower of ``open_clip.create_model_and_transforms(arch, pretrained=tag)`` with ``get_tokenizer(arch)``."""
    import open_clip

    model, _, arch, tag = _create(spec, **kwargs)
    return OpenClipTextEncoder(model, open_clip.get_tokenizer(arch), name=f"openclip-text:{spec}",
                               description=f"open_clip {arch} text tower ({tag or 'random init'})")
