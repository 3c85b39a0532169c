"""Pooling of per-layer activations into one vector per sample (docs/method.md §2).

Vision transformers are pooled by their CLS token, CNN feature maps by global average pooling, and text hidden
states by the attention-masked mean over tokens (the released code's ``pool_txt: "avg"``).
"""

from __future__ import annotations

import torch


def cls_token(hidden: torch.Tensor) -> torch.Tensor:
    """CLS token (token 0) of a ``[B, T, D]`` block output (docs/method.md §2, vision features)."""
    if hidden.dim() != 3:
        raise ValueError(f"cls_token expects [B, T, D], got shape {tuple(hidden.shape)}")
    return hidden[:, 0]


def global_avg_pool(fmap: torch.Tensor) -> torch.Tensor:
    """Global average over the spatial dims of a ``[B, C, H, W]`` feature map (CNN layers, docs/method.md §2)."""
    if fmap.dim() != 4:
        raise ValueError(f"global_avg_pool expects [B, C, H, W], got shape {tuple(fmap.shape)}")
    return fmap.mean(dim=(2, 3))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over tokens: ``sum_t h_t m_t / sum_t m_t`` (docs/method.md §2, text features).

    Padding positions (mask 0) contribute nothing, so the result does not depend on how much padding a batch adds.
    Accumulates in float32 so bf16/fp16 activations do not lose precision in the sum.
    """
    if hidden.dim() != 3 or mask.dim() != 2 or hidden.shape[:2] != mask.shape:
        raise ValueError(f"masked_mean expects hidden [B, T, D] and mask [B, T], got {tuple(hidden.shape)} "
                         f"and {tuple(mask.shape)}")
    m = mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
    total = (hidden.float() * m).sum(dim=1)
    # clamp: an all-padding row (empty text) gives zeros instead of NaN
    return total / m.sum(dim=1).clamp_min(1.0)
