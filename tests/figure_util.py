"""What a written figure shows, read back from its files: PNG pixel size, the plotted series' colours, PDF pages.

A figure test checks these against what the plotting code was asked to draw (panel layout -> inches x 150 dpi;
one tab10 colour per series) instead of a byte size, which a blank or wrong figure passes just as well.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

DPI = 150  # figures.save_figure


def tab10(index: int) -> tuple[int, int, int]:
    """The RGB of matplotlib's tab10 colour ``index`` (the series colours of every figure)."""
    from matplotlib import colormaps

    return tuple(round(255 * c) for c in colormaps["tab10"].colors[index])  # type: ignore[return-value]


def on_white(rgb: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    """``rgb`` drawn with opacity ``alpha`` over a white background (matplotlib's ``alpha=`` markers)."""
    return tuple(round(alpha * c + (1 - alpha) * 255) for c in rgb)  # type: ignore[return-value]


def has_colour(colours: set[tuple[int, int, int]], rgb: tuple[int, int, int], tol: int = 1) -> bool:
    """Some pixel within ``tol`` per channel of ``rgb`` (antialiasing and rounding of blended colours)."""
    return any(all(abs(c[i] - rgb[i]) <= tol for i in range(3)) for c in colours)


def png_colours(png: Path) -> set[tuple[int, int, int]]:
    with Image.open(png) as im:
        return {rgb for _, rgb in im.convert("RGB").getcolors(1 << 24)}


def png_size(png: Path) -> tuple[int, int]:
    with Image.open(png) as im:
        return im.size


def pdf_pages(pdf: Path) -> int:
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-"), pdf
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def assert_figure(png: Path, *, series: int, inches: tuple[float, float] | None = None) -> None:
    """``png`` (and its PDF twin) hold one page drawing exactly ``series`` tab10 series, at ``inches`` if given."""
    assert series < 7, "tab10 colour 7 is grey, which anti-aliased black text produces too"
    colours = png_colours(png)
    drawn = [i for i in range(10) if i != 7 and tab10(i) in colours]
    assert drawn == list(range(series)), (png.name, drawn, series)
    if inches is not None:
        assert png_size(png) == (round(inches[0] * DPI), round(inches[1] * DPI)), (png.name, png_size(png), inches)
    assert pdf_pages(png.with_suffix(".pdf")) == 1, png.name
