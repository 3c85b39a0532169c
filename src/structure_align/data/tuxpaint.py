"""Tux Paint stamps as image-caption pairs (docs/datasets.md "tuxpaint").

Every stamp is ``<name>.png`` and/or ``<name>.svg`` beside ``<name>.txt``, whose first line is the English caption
and whose later lines are ``<locale>.utf8=...`` translations. ``symbols/alphabets`` (single letters) is left out.
Choices, documented in docs/datasets.md: a stamp with both a PNG and an SVG uses the PNG (the hand-drawn bitmap that
the package ships; it also reproduces the feasibility count of 627 PNG + 165 SVG = 792 stamps); stamps that share a
caption are all kept (they are different drawings) and are forced into the same split.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..io import sha256_file
from .helpers import (
    assert_split_disjoint,
    check_test_fraction,
    composite_on_white,
    save_png,
    split_pairs,
    stratified_subset,
)
from .registry import DatasetInfo, SourceSpec, get_source, register_dataset, register_source, source_dir

log = logging.getLogger(__name__)

SOURCE = "tuxpaint-stamps-default"
# Debian bookworm's package; sha256 of the exact .deb bytes measured when it was pinned
register_source(SourceSpec(
    name=SOURCE, client="apt", package="tuxpaint-stamps-default", version="2022.06.04-1",
    sha256="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
    files=("usr/share/tuxpaint/stamps",), licence="GPL-2.0-or-later",
    description="Tux Paint rubber stamps: PNG/SVG drawings with an English caption in a .txt beside each"))
STAMPS_SUBDIR = "usr/share/tuxpaint/stamps"
EXCLUDED = ("symbols/alphabets",)
_DOCTYPE = re.compile(r"<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", re.DOTALL)
_ENTITY = re.compile(r"<!ENTITY\s+([A-Za-z_][\w.-]*)\s+[\"']([^\"'%&<]*)[\"']\s*>")
_LOCALE_LINE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2})?(@\w+)?\.(utf8|UTF-8)=")


@dataclass(frozen=True)
class Stamp:
    """One stamp: path relative to the stamps root (without suffix), caption, and the image file to use."""

    rel: str
    caption: str
    image: Path
    kind: str  # "png" | "svg"


def parse_caption(text: str) -> str | None:
    """The English caption of a stamp ``.txt``: its first non-empty line that is not a ``<locale>.utf8=`` line.

    Whitespace runs are collapsed ("A calculator.  6x7=42" -> "A calculator. 6x7=42"); ``None`` when there is none.
    """
    for line in text.splitlines():
        line = " ".join(line.split())
        if line and not _LOCALE_LINE.match(line):
            return line
    return None


def scan_stamps(stamps_root: Path) -> tuple[list[Stamp], dict[str, int]]:
    """All captioned stamps under ``stamps_root`` (sorted by path) and the counts of what was skipped."""
    counts = {"txt_files": 0, "excluded_alphabets": 0, "no_caption": 0, "no_image": 0, "png": 0, "svg": 0,
              "png_and_svg_used_png": 0}
    stamps: list[Stamp] = []
    for txt in sorted(stamps_root.rglob("*.txt")):
        rel = txt.relative_to(stamps_root).with_suffix("").as_posix()
        if any(rel.startswith(ex + "/") for ex in EXCLUDED):
            counts["excluded_alphabets"] += 1
            continue
        counts["txt_files"] += 1
        caption = parse_caption(txt.read_text(encoding="utf-8", errors="replace"))
        if caption is None:
            counts["no_caption"] += 1
            continue
        png, svg = txt.with_suffix(".png"), txt.with_suffix(".svg")
        if png.is_file():
            stamps.append(Stamp(rel, caption, png, "png"))
            counts["png"] += 1
            counts["png_and_svg_used_png"] += int(svg.is_file())
        elif svg.is_file():
            stamps.append(Stamp(rel, caption, svg, "svg"))
            counts["svg"] += 1
        else:
            counts["no_image"] += 1
    return stamps, counts


def expand_internal_entities(svg: bytes) -> bytes:
    """Inline plain-string ``<!ENTITY name "value">`` declarations and drop the DOCTYPE.

    Illustrator exports declare namespace URIs as internal entities; cairosvg parses with defusedxml, which rejects
    any entity. Expanding these literal strings ourselves keeps the safe parser (no external entities are resolved).
    """
    text = svg.decode("utf-8", errors="replace")
    doctype = _DOCTYPE.search(text)
    if doctype is None:
        return svg
    entities = dict(_ENTITY.findall(doctype.group(0)))
    text = text[:doctype.start()] + text[doctype.end():]
    for name, value in entities.items():
        text = text.replace(f"&{name};", value)
    return text.encode("utf-8")


def render_svg(path: Path, size: int) -> Image.Image:
    """Render an SVG with cairosvg so that its longer side is ``size`` pixels (aspect ratio kept)."""
    import cairosvg

    data = expand_internal_entities(path.read_bytes())
    probe = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, url=str(path), output_width=size)))
    if probe.height <= probe.width:
        return probe
    return Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, url=str(path), output_height=size)))


def load_stamp(stamp: Stamp, svg_size: int) -> Image.Image:
    """The stamp as an RGB image on white (PNG cut-outs are RGBA; SVGs are rendered first)."""
    if stamp.kind == "svg":
        image = render_svg(stamp.image, svg_size)
    else:
        with Image.open(stamp.image) as im:
            im.load()
            image = im.copy()
    return composite_on_white(image)


def _category(rel: str) -> str:
    return rel.split("/", 1)[0]


@register_dataset("tuxpaint", sources=SOURCE, task="pairs",
                  description="Tux Paint stamps (drawings) with their English captions; 20 % held out for retrieval",
                  options={"test_fraction": 0.2, "svg_size": 256})
def build_tuxpaint(resources_dir: Path, images_dir: Path, *, limit: int | None = None, seed: int = 0,
                   test_fraction: float = 0.2, svg_size: int = 256) -> tuple[pd.DataFrame, DatasetInfo]:
    """Build the Tux Paint pairs manifest; ``limit`` keeps a seeded subset stratified by top-level category."""
    try:
        import cairosvg  # noqa: F401  (checked up front: failing after rendering 600 PNGs would waste the run)
    except ImportError as exc:
        raise ImportError("the tuxpaint dataset renders SVG stamps with cairosvg: pip install cairosvg") from exc
    check_test_fraction(test_fraction, "tuxpaint")
    if isinstance(svg_size, bool) or not isinstance(svg_size, int) or svg_size < 8:
        raise ValueError(f"dataset 'tuxpaint': option svg_size={svg_size!r} must be an int >= 8")
    spec = get_source(SOURCE)
    root = source_dir(resources_dir, SOURCE, STAMPS_SUBDIR)
    stamps, counts = scan_stamps(root)
    if not stamps:
        raise FileNotFoundError(f"no captioned stamps found under {root}")
    cats = sorted({_category(s.rel) for s in stamps})
    strata = np.array([cats.index(_category(s.rel)) for s in stamps])
    keep = stratified_subset(strata, limit, seed)
    rows: list[dict] = []
    failed: list[str] = []
    for i in tqdm(keep, desc="tuxpaint stamps", unit="img"):
        stamp = stamps[int(i)]
        try:
            image = load_stamp(stamp, svg_size)
        except Exception as exc:  # noqa: BLE001  (any renderer/decoder failure skips only this stamp)
            log.warning("skipping stamp %s: %s", stamp.image, exc)
            failed.append(stamp.rel)
            continue
        out = save_png(image, images_dir / (stamp.rel.replace("/", "__") + ".png"))
        rows.append({"sample_id": stamp.rel, "image_path": str(out), "captions": [stamp.caption], "label": -1,
                     "source": SOURCE, "version": spec.version, "kind": stamp.kind, "digest": sha256_file(out)})
    counts["render_failed"] = len(failed)
    df = pd.DataFrame(rows)
    captions = [c[0] for c in df["captions"]]
    df["split"] = split_pairs(captions, list(df["digest"]), test_fraction, seed)
    assert_split_disjoint(df, image_keys=list(df["digest"]), where="tuxpaint")
    dup_caps = pd.Series(captions).value_counts()
    counts.update({
        "limit_kept": len(keep), "rows": len(df), "rows_png": int((df["kind"] == "png").sum()),
        "rows_svg": int((df["kind"] == "svg").sum()), "train": int((df["split"] == "train").sum()),
        "test": int((df["split"] == "test").sum()), "unique_captions": len(dup_caps),
        "captions_shared_by_several_stamps": int((dup_caps > 1).sum()),
        "stamps_with_shared_caption": int(dup_caps[dup_caps > 1].sum()),
        "identical_images": int(len(df) - df["digest"].nunique()),
    })
    info = DatasetInfo(name="tuxpaint", task="pairs", source=SOURCE, version=spec.version,
                       description="Tux Paint default stamps (no symbols/alphabets), first-line English captions, "
                                   "composited on white; SVG rendered with cairosvg", counts=counts)
    return df.drop(columns=["kind", "digest"]), info
