"""The manifest step's pre-flight image check and the one RGB opener (data/preflight.py, data/images.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_tiny_vit

from structure_align.data import build_manifest, read_manifest
from structure_align.data.helpers import composite_on_white
from structure_align.data.images import flatten_on_white, has_transparency, open_rgb
from structure_align.data.preflight import BadImageError, check_image, preflight

torch.set_num_threads(1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, width: int = 25_000, height: int = 24_000) -> Path:
    """A valid PNG header claiming ``width x height`` (600 Mpx by default) in ~100 bytes: 1-bit grey, tiny IDAT."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    return path


def _noise_png(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGB").save(path)
    return path


def _bad_images(folder: Path) -> dict[str, Path]:
    """The four bad files of issue 23: unreadable, truncated PNG, 0-byte, 600 Mpx."""
    folder.mkdir(parents=True, exist_ok=True)
    unreadable = folder / "notes.png"
    unreadable.write_text("this is not an image")
    whole = _noise_png(folder / "whole.png", 99, size=64).read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {"unreadable": unreadable, "truncated": truncated, "empty": empty, "huge": huge_png(folder / "huge.png")}


def _captions_dataset(tmp_path: Path) -> tuple[dict, dict[str, Path]]:
    img = tmp_path / "data" / "img"
    good = [_noise_png(img / f"good{i}.png", i) for i in range(6)]
    bad = _bad_images(img)
    rows = [f'"img/{p.name}","picture number {i}"' for i, p in enumerate(good + list(bad.values()))]
    file = tmp_path / "data" / "captions.csv"
    file.write_text("image,caption\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return {"kind": "captions", "file": str(file), "test_fraction": 0.3, "seed": 1}, bad


def test_check_image_reasons(tmp_path: Path) -> None:
    bad = _bad_images(tmp_path)
    reasons = {k: check_image(p, 100_000_000)[0] for k, p in bad.items()}
    assert reasons["unreadable"].startswith("cannot be opened as an image")
    assert reasons["truncated"].startswith("truncated or corrupt")
    assert reasons["empty"] == "empty file (0 bytes)"
    assert "25000 x 24000 = 600 Mpx is over images.max_pixels = 100 Mpx" == reasons["huge"]
    # the 600 Mpx header is fine under a higher limit (then only verify() looks at the chunks)
    assert check_image(bad["huge"], 700_000_000)[1] == {"width": 25_000, "height": 24_000, "mode": "1",
                                                        "transparent": False}


def test_pixel_limit_is_inclusive_and_strict(tmp_path: Path) -> None:
    path = _noise_png(tmp_path / "ok.png", 1)  # 24 x 24 = 576 pixels
    assert check_image(path, 576)[0] is None
    assert "over images.max_pixels" in check_image(path, 575)[0]


def test_error_names_every_bad_file_before_any_manifest_is_written(tmp_path: Path) -> None:
    decl, bad = _captions_dataset(tmp_path)
    with pytest.raises(BadImageError) as err:
        build_manifest("mine", tmp_path / "resources", tmp_path / "manifests", tmp_path / "images", declaration=decl)
    message = str(err.value)
    assert "4 of 10 images refused" in message and "images.on_bad_image: skip" in message
    for path in bad.values():
        assert str(path) in message, (path, message)
    assert not (tmp_path / "manifests" / "mine.parquet").exists()


def test_skip_drops_and_reports_them(tmp_path: Path) -> None:
    decl, bad = _captions_dataset(tmp_path)
    parquet, info = build_manifest("mine", tmp_path / "resources", tmp_path / "manifests", tmp_path / "images",
                                   declaration=decl, images={"on_bad_image": "skip"})
    df, info2 = read_manifest(parquet)
    assert info2 == info and len(df) == 6 and not any("good" not in p for p in df["image_path"])
    check = info.counts["image_check"]
    assert check["checked"] == 10 and check["bad"] == 4 and check["on_bad_image"] == "skip"
    assert {s["path"] for s in check["skipped"]} == {str(p) for p in bad.values()}
    assert check["modes"] == {"RGB": 6} and check["smallest_side"] == 24


def test_all_bad_is_an_error_even_with_skip(tmp_path: Path) -> None:
    bad = _bad_images(tmp_path)
    with pytest.raises(BadImageError, match="nothing is left"):
        preflight("x", [str(p) for p in bad.values()], on_bad_image="skip")
    with pytest.raises(ValueError, match="images.on_bad_image"):
        preflight("x", [], on_bad_image="ignore")


def _transparent_pair(tmp_path: Path) -> tuple[Path, Path]:
    """An RGBA drawing whose transparent pixels are black, and the same drawing composited on white by hand."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    alpha = np.zeros((32, 32), dtype=np.uint8)
    alpha[8:24, 8:24] = 255  # an opaque square on a transparent background
    rgb[alpha == 0] = 0  # transparent pixels hold black, as clip-art often does
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(rgba)
    white = np.where(alpha[..., None] == 255, rgb, 255).astype(np.uint8)
    flat = tmp_path / "white.png"
    Image.fromarray(white, mode="RGB").save(flat)
    return rgba, flat


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba, flat = _transparent_pair(tmp_path)
    with Image.open(rgba) as im:
        assert has_transparency(im) and not np.array_equal(np.asarray(im.convert("RGB")), np.asarray(open_rgb(flat)))
    assert np.array_equal(np.asarray(open_rgb(rgba)), np.asarray(open_rgb(flat)))
    # palette with a transparency key, and LA, end on white too; plain RGB is convert("RGB") byte for byte
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 0
    assert np.asarray(flatten_on_white(pal)).tolist() == [[[255, 255, 255]] * 4] * 4
    assert np.asarray(flatten_on_white(Image.new("LA", (2, 2), (0, 0)))).max() == 255
    rgb = Image.open(flat)
    assert flatten_on_white(rgb).tobytes() == rgb.convert("RGB").tobytes()
    # the registered sources' helper is the same function (emoji, Tux Paint stamps)
    assert composite_on_white(Image.open(rgba)).tobytes() == open_rgb(flat).tobytes()


def test_rgba_with_black_transparent_pixels_gives_the_features_of_the_white_image(tmp_path: Path, monkeypatch) -> None:
    import pandas as pd

    from structure_align.data import DatasetInfo, write_manifest
    from structure_align.encoders import load_encoder
    from structure_align.extract import extract_features
    from structure_align.features import load_features

    monkeypatch.chdir(tmp_path)
    rgba, flat = _transparent_pair(tmp_path)
    vit = load_encoder(f"hf:{make_tiny_vit(tmp_path / 'vit')}", device="cpu")
    feats = []
    for name, path in (("rgba", rgba), ("white", flat)):
        rows = [{"sample_id": "a", "image_path": str(path), "captions": ["a drawing"], "label": -1, "split": "test",
                 "source": "unit", "version": "0"}]
        info = write_manifest(pd.DataFrame(rows), DatasetInfo(name=name, task="pairs"), tmp_path / f"{name}.parquet")
        out = extract_features(tmp_path / f"{name}.parquet", vit, tmp_path / f"{name}.safetensors", batch_size=1,
                               device="cpu", progress=False)
        feats.append(load_features(out, manifest_sha256=info.manifest_sha256).layers)
    for a, b in zip(*feats):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
