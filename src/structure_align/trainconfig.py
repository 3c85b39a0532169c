"""All knobs of one training run (docs/method.md §4-§6), with the released code's defaults.

Names follow ``params.yaml`` mechanically, so a knob has one name from the parameter file to the code:
``training.<key>`` is ``TrainConfig.<key>``, ``structure.<key>`` is ``TrainConfig.rs_<key>`` and ``csa.<key>`` is
``TrainConfig.csa_<key>`` (the one mapping is :func:`structure_align.runs.train_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .heads import HEADS

SELECT_ON: tuple[str, ...] = ("total", "clip")
# released defaults of the R_S options that differ between the heads (InfoNCE temperature) and CSA (§4.4)
_CSA_RS_TAU = 0.2
_CSA_RS_WEIGHTING = "inverse"


@dataclass
class TrainConfig:
    """One run's training configuration; defaults are the released ones (docs/method.md §5-§6).

    ``head`` is a name of :data:`structure_align.heads.HEADS`; ``head_options`` go to its constructor.
    ``rs_lambda = 0`` gives the baselines (R_S is then not computed); the other ``rs_*`` are the
    :func:`structure_regularizer` options. ``rs_tau = None`` and ``rs_weighting = None`` mean the released value
    for the head: the InfoNCE ``temperature`` and ``"none"`` for the projection heads, 0.2 and ``"inverse"`` for
    CSA + R_S. λ ramps linearly over ``rs_warmup_steps`` optimiser steps, or over ``rs_warmup_epochs`` epochs when
    that is set (so that the ramp fits the run at any N, docs/method.md §6.6).

    Model selection (§6.6): the epoch whose validation loss is lowest is restored; ``select_on = "total"`` is the
    released rule (InfoNCE + λ_t·R_S with the current λ_t), ``"clip"`` the validation InfoNCE alone.
    ``select_after_warmup`` makes only epochs that end after the warm-up eligible, and patience counts only those,
    for every arm alike (with λ = 0 too), so an R_S run is never restored at a partial λ.

    The cosine schedule has ``T_max = t_max_epochs·max(N // batch_size, 1)`` steps and ``eta_min = 0``; PyTorch's
    ``CosineAnnealingLR`` is periodic, so with more than ``2·T_max`` steps the LR rises again, as released (§6.5).
    ``csa_*`` configure ``head="csa"`` (``csa_sim_dim = None`` -> ``min(dim, d_x, d_y)``; ``csa_batch_size = None``
    -> ``batch_size``); CSA + R_S refinement runs when ``rs_lambda > 0``; ``csa_whiten`` whitens the refined
    projections as the released code intends (its whitening is a no-op, so ``False`` is the released behaviour).
    """

    head: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    dim: int = 512
    temperature: float = 0.05
    rs_lambda: float = 0.0
    rs_warmup_steps: int = 1000
    rs_warmup_epochs: int | None = None
    rs_levels: int = 1
    rs_tau: float | None = None
    rs_weighting: str | None = None
    rs_centering: str = "mean"
    rs_center_first: bool = False
    rs_distance: str = "cosine"
    rs_divergence: str = "code"
    rs_margin: float = 0.0
    lr: float = 1e-3
    lr_finder: bool = False
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    batch_size: int = 4096
    epochs: int = 1000
    patience: int = 200
    select_on: str = "total"
    select_after_warmup: bool = False
    grad_clip: float = 1.0
    t_max_epochs: int = 50
    seed: int = 42
    csa_sim_dim: int | None = None
    csa_weighting: str = "none"
    csa_reg: float = 0.0
    csa_lambda_cca: float = 1e-2
    csa_epochs: int = 10
    csa_lr: float = 5e-4
    csa_batch_size: int | None = None
    csa_whiten: bool = False

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        problems = []
        if self.head not in HEADS:
            problems.append(f"head={self.head!r} (expected one of {list(HEADS)})")
        if self.select_on not in SELECT_ON:
            problems.append(f"select_on={self.select_on!r} (expected one of {list(SELECT_ON)})")
        for name in ("dim", "batch_size", "t_max_epochs", "rs_levels", "epochs", "patience"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 1)")
        for name in ("rs_warmup_steps", "csa_epochs"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 0)")
        if self.rs_warmup_epochs is not None and int(self.rs_warmup_epochs) < 0:
            problems.append(f"rs_warmup_epochs={self.rs_warmup_epochs!r} (must be >= 0 or None)")
        for name in ("temperature", "lr", "grad_clip", "csa_lr"):
            if not float(getattr(self, name)) > 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be > 0)")
        for name in ("rs_lambda", "weight_decay", "rs_margin", "csa_lambda_cca", "csa_reg"):
            if not float(getattr(self, name)) >= 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 0)")
        if self.rs_tau is not None and not self.rs_tau > 0:
            problems.append(f"rs_tau={self.rs_tau!r} (must be > 0 or None)")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            problems.append(f"betas={self.betas!r} (each must be in [0, 1))")
        if problems:
            raise ValueError("TrainConfig: invalid " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @property
    def is_csa(self) -> bool:
        return HEADS[self.head].fitted

    def rs_kwargs(self) -> dict[str, Any]:
        """Options passed to :func:`structure_regularizer` (None values resolved to the head's released default)."""
        tau = self.rs_tau if self.rs_tau is not None else (_CSA_RS_TAU if self.is_csa else self.temperature)
        weighting = self.rs_weighting if self.rs_weighting is not None else (
            _CSA_RS_WEIGHTING if self.is_csa else "none")
        return {"levels": self.rs_levels, "tau": tau, "weighting": weighting, "centering": self.rs_centering,
                "center_first": self.rs_center_first, "distance": self.rs_distance,
                "divergence": self.rs_divergence, "margin": self.rs_margin}

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Length of the λ ramp in optimiser steps for a run with ``steps_per_epoch`` steps per epoch."""
        if self.rs_warmup_epochs is not None:
            return int(self.rs_warmup_epochs) * int(steps_per_epoch)
        return int(self.rs_warmup_steps)
