"""Encoder registry: name -> factory (docs/design.md "Encoders").

Two kinds of entries, both registered by a decorator in the file that defines the loader (as timm's
``@register_model``):

* exact names (``effnet-lite0``, ``minilm-l6`` ...)::

      @register_encoder("effnet-lite0", modality="vision", description="EfficientNet-Lite0 ...")
      def load_effnet_lite0() -> Encoder: ...

* families selected by a name prefix (``hf:<id>``, ``timm:<name>``, ``openclip-image:<arch>:<tag>``,
  ``openclip-text:<arch>:<tag>``); ``modality`` is ``"vision"``/``"text"`` or a function ``spec -> modality`` that
  answers without reading weights::

      @register_family("hf", modality=hf_modality, description="any transformers AutoModel ...")
      def load_hf_encoder(spec: str, **kwargs) -> Encoder: ...

The package's ``__init__`` calls :func:`discover`, which imports every module of the package found by
:func:`pkgutil.iter_modules` except the infrastructure (:data:`INFRASTRUCTURE` and names starting with ``_``), so a
new encoder is one decorated loader in a new or existing module. Those modules import transformers, timm,
open_clip, onnx ... only inside functions, so importing the registry stays cheap. The function-call forms
``register_encoder(name, factory, ...)`` / ``register_family(prefix, factory, modality, ...)`` register encoders
defined outside the package (library users).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..utils import resolve_device
from .base import Encoder

log = logging.getLogger(__name__)

MODALITIES = ("vision", "text")

# modules of this package that define no encoders (besides every module whose name starts with "_")
INFRASTRUCTURE = frozenset({"base", "blocks", "pooling", "registry"})

Factory = Callable[..., Encoder]
ModalityRef = Callable[[str], str] | str
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EncoderSpec:
    """A registered exact name: its factory and (when known up front) its modality."""

    name: str
    factory: Factory
    modality: str | None = None
    description: str = ""


@dataclass(frozen=True)
class FamilySpec:
    """A name prefix: ``factory(spec, **kwargs)`` builds the encoder, ``modality`` answers cheaply.

    ``modality`` is ``"vision"``/``"text"`` for the whole family or a function ``spec -> modality``.
    """

    prefix: str
    factory: Factory
    modality: ModalityRef
    description: str = ""


ENCODERS: dict[str, EncoderSpec] = {}
FAMILIES: dict[str, FamilySpec] = {}


def _origin(fn: Any) -> tuple[Any, ...] | None:
    """Where a callable was defined: (module, qualname, first line), or None when that is unknown."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module is None or qualname is None:
        return None
    code = getattr(fn, "__code__", None)
    return module, qualname, getattr(code, "co_firstlineno", None)


def _same_callable(a: Any, b: Any) -> bool:
    """True for the same object or the same definition re-executed (module re-import / reload)."""
    if a is b:
        return True
    origin = _origin(a)
    return origin is not None and origin == _origin(b)


def _check_callable(what: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be a callable, got {fn!r} (no 'module:function' strings: register the "
                        f"function itself, with the decorator in the file that defines it)")


def _check_new(kind: str, key: str, table: dict[str, Any], factory: Any, overwrite: bool) -> None:
    """Refuse a different factory under an existing name unless ``overwrite``."""
    old = table.get(key)
    if old is None or overwrite or _same_callable(old.factory, factory):
        return
    raise ValueError(f"{kind} {key!r} is already registered by {_describe(old.factory)}; refusing "
                     f"{_describe(factory)} (pass overwrite=True to replace it)")


def _describe(fn: Any) -> str:
    origin = _origin(fn)
    return f"{origin[0]}.{origin[1]}" if origin is not None else repr(fn)


def register_encoder(name: str, factory: Factory | None = None, *, modality: str | None = None,
                     description: str = "", overwrite: bool = False) -> Any:
    """Register ``factory(**kwargs) -> Encoder`` under ``name``; without ``factory``, a decorator that does so.

    Decorator form (in the file that defines the loader)::

        @register_encoder("my-enc", modality="vision", description="what it is, where its weights come from")
        def load_my_enc(**kwargs) -> Encoder: ...

    Call form (library users): ``register_encoder("my-enc", load_my_enc, modality="vision")``. Both return the
    factory unchanged. Give ``modality`` when it is known, so that :func:`encoder_modality` stays cheap; without
    it the modality is found by building the encoder once. Registering the same function again (a re-imported
    module) is a no-op; a different factory under an existing name raises unless ``overwrite=True``.
    """
    if ":" in name:
        raise ValueError(f"encoder name {name!r} must not contain ':' (reserved for family prefixes)")
    if not name:
        raise ValueError("encoder name must be non-empty")
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality of encoder {name!r} must be one of {MODALITIES}, got {modality!r}")

    def decorate(fn: F) -> F:
        _check_callable(f"factory of encoder {name!r}", fn)
        _check_new("encoder", name, ENCODERS, fn, overwrite)
        ENCODERS[name] = EncoderSpec(name, fn, modality, description)
        return fn

    return decorate if factory is None else decorate(factory)


def register_family(prefix: str, factory: Factory | None = None, modality: ModalityRef | None = None, *,
                    description: str = "", overwrite: bool = False) -> Any:
    """Register a family: names ``<prefix>:<spec>`` are built by ``factory(spec, **kwargs)``.

    Decorator form::

        @register_family("hf", modality=hf_modality, description="any transformers AutoModel")
        def load_hf_encoder(spec: str, **kwargs) -> Encoder: ...

    Call form: ``register_family("my", load_my, "vision")``. ``modality`` is required: ``"vision"``/``"text"``
    for the whole family or a function ``spec -> modality`` that reads no weights. Same re-registration rules
    as :func:`register_encoder`.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"family prefix {prefix!r} must be non-empty and contain no ':'")
    if modality is None:
        raise TypeError(f"family {prefix!r}: modality is required ('vision', 'text' or a function spec -> modality)")
    if isinstance(modality, str):
        if modality not in MODALITIES:
            raise ValueError(f"modality of family {prefix!r} must be one of {MODALITIES} or a function "
                             f"spec -> modality, got {modality!r}")
    else:
        _check_callable(f"modality of family {prefix!r}", modality)

    def decorate(fn: F) -> F:
        _check_callable(f"factory of family {prefix!r}", fn)
        _check_new("encoder family", prefix, FAMILIES, fn, overwrite)
        FAMILIES[prefix] = FamilySpec(prefix, fn, modality, description)
        return fn

    return decorate if factory is None else decorate(factory)


def discover(package: str = __package__) -> list[str]:
    """Import every module of ``package`` that may register encoders; returns their short names.

    Scans with :func:`pkgutil.iter_modules` and skips :data:`INFRASTRUCTURE` and names starting with ``_``.
    Importing a module runs its decorators; an import error is raised, not hidden, since it means a broken
    (or not cheaply importable) encoder module.
    """
    pkg = sys.modules.get(package) or importlib.import_module(package)
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in INFRASTRUCTURE:
            continue
        importlib.import_module(f"{package}.{info.name}")
        found.append(info.name)
    return found


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
    if isinstance(family.modality, str):
        return family.modality
    modality = family.modality(spec)
    if modality not in MODALITIES:
        raise ValueError(f"modality function of family {family.prefix!r} returned {modality!r} for {name!r}, "
                         f"expected one of {MODALITIES}")
    return modality


def load_encoder(name: str, device: str | torch.device = "auto", **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` in eval mode on ``device`` (``auto|cpu|cuda|cuda:N``).

    ``kwargs`` go to the factory (e.g. ``pretrained=False`` for the hub families in tests, ``cache_dir=`` for the
    offline encoders that rebuild weights).
    """
    entry, family, spec = _lookup(name)
    dev = resolve_device(device)
    if entry is not None:
        encoder = entry.factory(**kwargs)
    else:
        assert family is not None
        encoder = family.factory(spec, **kwargs)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"factory of encoder {name!r} returned {type(encoder).__name__}, not an Encoder")
    if encoder.modality not in MODALITIES:
        raise ValueError(f"encoder {name!r} reports modality {encoder.modality!r}, expected one of {MODALITIES}")
    if entry is not None and entry.modality is not None and encoder.modality != entry.modality:
        raise ValueError(f"encoder {name!r} is registered as {entry.modality} but its factory built a "
                         f"{encoder.modality} encoder")
    if len(encoder.layer_names) != len(encoder.embed_dims):
        raise ValueError(f"encoder {name!r}: {len(encoder.layer_names)} layer names but "
                         f"{len(encoder.embed_dims)} embed dims")
    encoder.name = name
    encoder.model.eval()
    encoder.to(dev)
    log.info("loaded encoder %s (%s, %d layers, pooling=%s) on %s", name, encoder.modality, encoder.n_layers,
             encoder.pooling, dev)
    return encoder
