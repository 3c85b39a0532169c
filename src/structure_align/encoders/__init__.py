"""Encoder registry, pooling, offline packaged encoders and hub families (docs/encoders.md)."""

from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, ResizeCropNormalize
from .pooling import cls_token, global_avg_pool, masked_mean
from .registry import (
    ENCODERS,
    FAMILIES,
    encoder_modality,
    list_encoders,
    load_encoder,
    register_encoder,
    register_family,
)

__all__ = [
    "ENCODERS", "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "ResizeCropNormalize", "cls_token",
    "encoder_modality", "global_avg_pool", "list_encoders", "load_encoder", "masked_mean", "register_encoder",
    "register_family",
]
