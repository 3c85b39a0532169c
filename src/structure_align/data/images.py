"""The one place images are opened as RGB (docs/your-data.md "Images"): transparency composited on white.

Every source that materialises images (emoji, Tux Paint stamps, ...) and feature extraction open images through
:func:`open_rgb` / :func:`flatten_on_white`, so a transparent pixel means white everywhere. ``Image.convert("RGB")``
alone would keep whatever colour the transparent pixels store (often black), and the same clip-art would embed
differently depending on which path opened it. Images without transparency are converted exactly as
``convert("RGB")`` does, so their pixels (and the features of every dataset without transparency) are unchanged.

PIL's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is switched off here: the manifest step's pre-flight
check (:mod:`.preflight`, params ``images.max_pixels``) refuses over-large images by name before any extraction,
and PIL's global limit would otherwise stop a run on an image the user allowed, with a stack trace.
"""

from __future__ import annotations

import os

from PIL import Image

# the pre-flight check (params images.max_pixels) is the guard; see the module docstring
Image.MAX_IMAGE_PIXELS = None

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def has_transparency(image: Image.Image) -> bool:
    """True for an alpha channel (RGBA, LA, PA) or a transparency key (``P``/``L``/``RGB`` with ``transparency``)."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def flatten_on_white(image: Image.Image) -> Image.Image:
    """RGB copy of ``image`` with any transparency composited onto opaque white.

    ``RGB`` and ``L`` images without a transparency key are plain ``convert("RGB")`` (bytes as before); every other
    mode goes through RGBA, so palette, alpha and keyed transparency all end on white.
    """
    if image.mode in ("RGB", "L") and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode the image at ``path`` fully and return it as RGB on white (:func:`flatten_on_white`)."""
    with Image.open(path) as im:
        im.load()
        return flatten_on_white(im)
