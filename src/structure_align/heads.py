"""Projection heads, the head-pair aligner and the list of aligners a run can train (docs/method.md §4).

Every aligner in the package (a trained head pair here, CCA/CSA in :mod:`structure_align.csa`) exposes
``encode_image(x)`` / ``encode_text(y)`` returning L2-normalised embeddings, ``save(path)`` and is rebuilt by
:func:`load_aligner` from a safetensors file whose metadata names the classes and options as JSON (no pickles).
:data:`HEADS` is the one list of aligners (name, class, table label): params validation, the workflow's wildcard
constraints, the CLI and the report all read it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .csa import CSA
from .io import FileFormatError, verify_safetensors, write_safetensors
from .utils import log

FORMAT_VERSION = "1"


class LinearHead(nn.Module):
    """Linear baseline head of docs/method.md §4.1: ``nn.Linear(d_in, d_out)`` with bias, default PyTorch init."""

    def __init__(self, d_in: int, d_out: int = 512) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` [B, d_in] to [B, d_out] (not normalised: the loss / aligner normalises)."""
        return self.proj(x)


class MLPHead(nn.Module):
    """A true two-layer MLP head (docs/method.md §4.2, the FuseMix-style baseline): Linear -> GELU -> Dropout -> Linear.

    With ``residual=True`` a bias-free linear skip ``P x`` is added, so the head starts as a linear map plus a
    nonlinear correction. ``hidden`` defaults to ``d_out``.
    """

    def __init__(self, d_in: int, d_out: int = 512, hidden: int | None = None, residual: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = d_out if hidden is None else int(hidden)
        if hidden <= 0:
            raise ValueError(f"MLPHead: hidden must be positive, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPHead: dropout must be in [0, 1), got {dropout}")
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, d_out)
        self.skip = nn.Linear(d_in, d_out, bias=False) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` [B, d_in] to [B, d_out]."""
        out = self.fc2(self.drop(self.act(self.fc1(x))))
        if self.skip is not None:
            out = out + self.skip(x)
        return out


class ReleasedResLowRankHead(nn.Module):
    """The released "MLP" head (``ResLowRankHead``, docs/method.md §4.2): ``z = P x + α W2 Dropout(GELU(W1 x))``.

    P (d_out x d_in) and W1 (rank x d_in) are bias-free and orthogonally initialised, W2 (d_out x rank) starts at
    zero, and the gate ``α = sigmoid(g)`` is learnable. ``gate_init`` is the initial gate value α in [0, 1), as in
    the released configs: ``gate_init = 0`` (every released MLP config) leaves ``g = -inf``, so α = 0 with zero
    gradient and the head is a bias-free, orthogonally initialised linear map whose W1, W2, g never move. Any
    ``gate_init`` in (0, 1) sets ``g = logit(gate_init)`` and opens the residual branch.
    """

    def __init__(self, d_in: int, d_out: int = 512, rank: int = 64, dropout: float = 0.1,
                 gate_init: float = 0.0) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"ReleasedResLowRankHead: rank must be positive, got {rank}")
        if not 0.0 <= float(gate_init) < 1.0:
            raise ValueError(f"ReleasedResLowRankHead: gate_init is the gate value alpha and must be in [0, 1), "
                             f"got {gate_init}")
        self.proj = nn.Linear(d_in, d_out, bias=False)
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out, bias=False)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        nn.init.orthogonal_(self.proj.weight, gain=1.0)
        nn.init.orthogonal_(self.down.weight, gain=1.0)
        nn.init.zeros_(self.up.weight)
        alpha = float(gate_init)
        logit = -math.inf if alpha == 0.0 else math.log(alpha / (1.0 - alpha))
        self.gate_logit = nn.Parameter(torch.tensor(logit, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` [B, d_in] to [B, d_out]; with the closed gate this equals ``x @ P.T``."""
        alpha = torch.sigmoid(self.gate_logit)
        return self.proj(x) + alpha * self.up(self.drop(self.act(self.down(x))))


@dataclass(frozen=True)
class HeadSpec:
    """One aligner a run can train: ``name`` (params ``methods[].head``, run paths), the class, the table label and
    the options its constructor accepts. ``fitted`` aligners (CSA) are solved in closed form, not trained by SGD."""

    name: str
    cls: type[nn.Module]
    label: str
    options: frozenset[str] = frozenset()
    fitted: bool = False
    description: str = ""


HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec("linear", LinearHead, "Linear", description="nn.Linear with bias (§4.1)"),
    HeadSpec("mlp", MLPHead, "MLP", frozenset({"hidden", "residual", "dropout"}),
             description="a real MLP: Linear -> GELU -> Dropout -> Linear (§4.2)"),
    HeadSpec("released_mlp", ReleasedResLowRankHead, "MLP (released)", frozenset({"rank", "dropout", "gate_init"}),
             description="the released ResLowRankHead; its closed gate makes it a bias-free linear map (§4.2)"),
    HeadSpec("csa", CSA, "CSA", fitted=True,
             description="CCA fitted in closed form; with R_S, the released post-hoc refinement (§4.3, §4.4)"),
)}


def head_spec(name: str) -> HeadSpec:
    """The :class:`HeadSpec` of ``name``; an unknown name raises ``ValueError`` listing :data:`HEADS`."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; expected one of {list(HEADS)}")
    return HEADS[name]


def build_head(kind: str, d_in: int, d_out: int = 512, **opts: Any) -> nn.Module:
    """Build one projection head: ``linear`` (§4.1), ``mlp`` (a real MLP) or ``released_mlp`` (§4.2, closed gate).

    ``opts`` go to the head's constructor (``hidden``, ``residual``, ``dropout`` for mlp; ``rank``, ``dropout``,
    ``gate_init`` for released_mlp); an option the head does not take raises ``ValueError`` naming it.
    """
    if d_in <= 0 or d_out <= 0:
        raise ValueError(f"build_head: d_in and d_out must be positive, got d_in={d_in}, d_out={d_out}")
    spec = head_spec(kind)
    if spec.fitted:
        raise ValueError(f"build_head: {kind!r} is fitted in closed form (CSA.fit), not a projection head")
    unknown = set(opts) - spec.options
    if unknown:
        raise ValueError(f"build_head: option(s) {sorted(unknown)} not accepted by head kind {kind!r}; "
                         f"allowed: {sorted(spec.options)}")
    return spec.cls(int(d_in), int(d_out), **opts)


def _head_spec(kind: str, d_in: int, d_out: int, opts: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "d_in": int(d_in), "d_out": int(d_out), "options": dict(opts)}


class HeadAligner(nn.Module):
    """A pair of projection heads (image, text) mapping frozen features into the joint space (docs/method.md §4).

    ``encode_image`` / ``encode_text`` move the input to the heads' device as float32 and return L2-normalised
    embeddings; they keep the autograd graph (the training loop uses them), so wrap evaluation in
    ``torch.inference_mode()``. Build with :meth:`from_spec` to make the head kinds/options saveable.
    """

    def __init__(self, image_head: nn.Module, text_head: nn.Module,
                 spec: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.image_head = image_head
        self.text_head = text_head
        self.spec = spec

    @classmethod
    def from_spec(cls, image: dict[str, Any], text: dict[str, Any]) -> HeadAligner:
        """Build from two specs ``{"kind", "d_in", "d_out", "options"}`` (the form stored in the saved metadata)."""
        heads = []
        for side, s in (("image", image), ("text", text)):
            missing = {"kind", "d_in", "d_out"} - set(s)
            if missing:
                raise ValueError(f"HeadAligner.from_spec: {side} spec lacks key(s) {sorted(missing)}: {s}")
            heads.append(build_head(s["kind"], s["d_in"], s["d_out"], **s.get("options", {})))
        spec = {"image": _head_spec(image["kind"], image["d_in"], image["d_out"], image.get("options", {})),
                "text": _head_spec(text["kind"], text["d_in"], text["d_out"], text.get("options", {}))}
        return cls(heads[0], heads[1], spec)

    @classmethod
    def build(cls, kind: str, d_image: int, d_text: int, d_out: int = 512, **opts: Any) -> HeadAligner:
        """Two heads of the same ``kind`` and options, one per modality."""
        return cls.from_spec(_head_spec(kind, d_image, d_out, opts), _head_spec(kind, d_text, d_out, opts))

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``norm(f_img(x))`` [B, d_out]."""
        return F.normalize(self.image_head(x.to(self._device(), torch.float32)), dim=-1)

    def encode_text(self, y: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``norm(f_txt(y))`` [B, d_out]."""
        return F.normalize(self.text_head(y.to(self._device(), torch.float32)), dim=-1)

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as safetensors, with the head specs as JSON metadata (atomic)."""
        if self.spec is None:
            raise ValueError("HeadAligner.save: this aligner was built from raw modules without a spec; "
                             "use HeadAligner.from_spec / HeadAligner.build so load_aligner can rebuild it")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        meta = {"format_version": FORMAT_VERSION, "aligner": "heads", "spec": json.dumps(self.spec)}
        # io's writer keeps tensor and metadata order fixed, so equal weights give byte-identical files
        write_safetensors(path, {k: v.numpy() for k, v in tensors.items()}, meta)
        log.info("saved head aligner to %s", path)


def _read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an aligner file; a missing, truncated or corrupted file raises FileFormatError."""
    try:  # size, header and content checksum checked before any tensor is read
        header, _ = verify_safetensors(path)
    except FileFormatError as exc:
        raise FileFormatError(f"aligner file {exc}") from None
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt payloads
        raise FileFormatError(f"aligner file {os.fspath(path)!r} is not a readable safetensors file: {exc}") from exc
    return tensors, dict(header.get("__metadata__") or {})


def load_aligner(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved aligner (``HeadAligner`` or ``CSA``) from its safetensors file, in eval mode."""
    tensors, meta = _read_safetensors(path)
    kind = meta.get("aligner")
    if kind == "heads":
        if "spec" not in meta:
            raise FileFormatError(f"aligner file {os.fspath(path)!r}: metadata key 'spec' is missing")
        spec = json.loads(meta["spec"])
        aligner: nn.Module = HeadAligner.from_spec(spec["image"], spec["text"])
        missing, unexpected = aligner.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise FileFormatError(f"aligner file {os.fspath(path)!r}: tensors do not match the spec "
                             f"(missing {missing}, unexpected {unexpected})")
    elif kind == "csa":
        aligner = CSA.from_saved(tensors, meta, source=os.fspath(path))
    else:
        raise FileFormatError(f"aligner file {os.fspath(path)!r}: metadata key 'aligner' is {kind!r}; "
                         "expected 'heads' or 'csa'")
    return aligner.to(device).eval()
