"""Pre-flight image check of the manifest step (docs/your-data.md "What each check refuses").

Before a manifest is written, every image it lists is opened once without a full decode: PIL reads the header
(size, mode) and ``verify()`` walks the file's chunks on a fresh handle (for PNG: every chunk's length and CRC up to
``IEND``, which catches a truncated or corrupt file without decompressing the pixels). An image is *bad* when it

* is empty (0 bytes, or a header that claims a zero width or height),
* cannot be opened or identified as an image,
* has more pixels than ``max_pixels`` (params ``images.max_pixels``; PIL's own bomb guard is off, see
  :mod:`.images`, so this check is what refuses it, by name), or
* is truncated or corrupt (``verify()`` fails).

With ``on_bad_image: error`` (default) the manifest step stops with every bad file and its reason, before any
extraction; with ``skip`` the rows are dropped and the list goes to the log and the manifest info
(``counts.image_check``). Images with transparency are counted: extraction composites them on white
(:func:`.images.open_rgb`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .images import has_transparency

log = logging.getLogger(__name__)

ON_BAD_IMAGE = ("error", "skip")
DEFAULT_MAX_PIXELS = 100_000_000


class BadImageError(ValueError):
    """The pre-flight check found images it refuses; the message lists every file and its reason."""


@dataclass
class ImageCheck:
    """The outcome of :func:`check_images`: ``bad`` maps path -> reason; the rest is bookkeeping of good images."""

    checked: int = 0
    bad: dict[str, str] = field(default_factory=dict)
    modes: Counter = field(default_factory=Counter)
    transparent: int = 0
    max_pixels_seen: int = 0
    min_side: int = 0

    def summary(self, on_bad_image: str, max_pixels: int) -> dict[str, Any]:
        """The ``counts.image_check`` entry of the manifest info (JSON-able, deterministic key order)."""
        out: dict[str, Any] = {
            "checked": self.checked, "bad": len(self.bad), "on_bad_image": on_bad_image, "max_pixels": max_pixels,
            "modes": dict(sorted(self.modes.items())), "transparent_composited_on_white": self.transparent,
            "largest_pixels": self.max_pixels_seen, "smallest_side": self.min_side,
        }
        if self.bad:
            out["skipped" if on_bad_image == "skip" else "refused"] = [
                {"path": p, "reason": r} for p, r in sorted(self.bad.items())]
        return out


def check_image(path: str | os.PathLike, max_pixels: int) -> tuple[str | None, dict[str, Any]]:
    """``(reason, header)`` of one image: ``reason`` is None for a good image; ``header`` has width, height, mode
    and transparency when the header could be read."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)", {}
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", {}
    try:
        with Image.open(path) as im:
            width, height = im.size
            header = {"width": width, "height": height, "mode": im.mode, "transparent": has_transparency(im)}
    except Exception as exc:  # noqa: BLE001  (any failure to identify the file is a reason, not a crash)
        return f"cannot be opened as an image ({type(exc).__name__}: {exc})", {}
    if width <= 0 or height <= 0:
        return f"empty image ({width} x {height} pixels)", header
    if width * height > max_pixels:
        return (f"{width} x {height} = {width * height / 1e6:.0f} Mpx is over images.max_pixels = "
                f"{max_pixels / 1e6:g} Mpx"), header
    try:
        with Image.open(path) as im:
            im.verify()  # a fresh handle: verify() leaves the image unusable
    except Exception as exc:  # noqa: BLE001
        return f"truncated or corrupt ({type(exc).__name__}: {exc})", header
    return None, header


def check_images(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Check every distinct path of ``paths`` (:func:`check_image`); never stops at the first bad one."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"params key 'images.max_pixels': {max_pixels!r} must be a positive integer")
    result = ImageCheck()
    sides = []
    for path in dict.fromkeys(paths):
        reason, header = check_image(path, max_pixels)
        result.checked += 1
        if reason is not None:
            result.bad[path] = reason
            continue
        result.modes[header["mode"]] += 1
        result.transparent += int(header["transparent"])
        result.max_pixels_seen = max(result.max_pixels_seen, header["width"] * header["height"])
        sides.append(min(header["width"], header["height"]))
    result.min_side = min(sides) if sides else 0
    return result


def preflight(dataset: str, image_paths: Sequence[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
              on_bad_image: str = "error") -> tuple[list[bool], dict[str, Any]]:
    """Check a manifest's images; returns ``(keep, summary)``: a keep flag per row and the ``counts.image_check`` entry.

    ``error`` raises :class:`BadImageError` naming every bad file and why; ``skip`` logs them and marks their rows
    ``False`` (a dataset left without any image is an error either way).
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"params key 'images.on_bad_image': {on_bad_image!r} is not one of {list(ON_BAD_IMAGE)}")
    result = check_images(list(image_paths), max_pixels)
    summary = result.summary(on_bad_image, max_pixels)
    if not result.bad:
        return [True] * len(image_paths), summary
    listing = "\n  ".join(f"{p}: {r}" for p, r in sorted(result.bad.items()))
    if on_bad_image == "error" or len(result.bad) == result.checked:
        hint = ("set images.on_bad_image: skip to drop them" if on_bad_image == "error"
                else "every image is bad, nothing is left")
        raise BadImageError(f"dataset {dataset!r}: {len(result.bad)} of {result.checked} images refused by the "
                            f"pre-flight check ({hint}):\n  {listing}")
    log.warning("dataset %s: skipping %d of %d images (images.on_bad_image: skip):\n  %s", dataset,
                len(result.bad), result.checked, listing)
    return [p not in result.bad for p in image_paths], summary


def apply_preflight(dataset: str, df: Any, info: Any, images: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The manifest step's hook: check ``df.image_path``, drop skipped rows and add ``counts.image_check`` to ``info``.

    ``images`` is params ``images`` (``max_pixels``, ``on_bad_image``; defaults 100 Mpx and ``error``).
    Relative image paths are checked relative to the working directory, as extraction opens them.
    """
    import dataclasses

    opts = dict(images or {})
    max_pixels = int(opts.get("max_pixels", DEFAULT_MAX_PIXELS))
    on_bad = str(opts.get("on_bad_image", "error"))
    keep, summary = preflight(dataset, [str(p) for p in df["image_path"]], max_pixels=max_pixels,
                              on_bad_image=on_bad)
    if not all(keep):
        df = df.loc[keep].reset_index(drop=True)
    return df, dataclasses.replace(info, counts={**info.counts, "image_check": summary})
