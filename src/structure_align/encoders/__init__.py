"""Encoder registry, pooling, offline packaged encoders and hub families (docs/encoders.md).

Importing the package imports every encoder module (:func:`~.registry.discover`), whose decorators fill
:data:`ENCODERS` and :data:`FAMILIES`; none of them imports transformers, timm, open_clip or onnx at module level.
"""

from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, ResizeCropNormalize
from .pooling import cls_token, global_avg_pool, masked_mean
from .registry import (
    ENCODERS,
    FAMILIES,
    MODALITIES,
    discover,
    encoder_modality,
    list_encoders,
    load_encoder,
    register_encoder,
    register_family,
)

discover(__name__)

__all__ = [
    "ENCODERS", "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "MODALITIES", "Encoder", "ResizeCropNormalize",
    "cls_token", "discover", "encoder_modality", "global_avg_pool", "list_encoders", "load_encoder", "masked_mean",
    "register_encoder", "register_family",
]
