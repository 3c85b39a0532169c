"""Package layout of structure_align.data: pkgutil discovery, registration in the defining file, one writer/hasher."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import structure_align.data as data_pkg
from structure_align.data import (
    DATASET_MODULES,
    DATASETS,
    INFRASTRUCTURE,
    KINDS,
    SOURCE_ORIGINS,
    save_png,
    sha256_file,
)
from structure_align.data import registry as registry_mod
from structure_align.io import sha256_file as io_sha256_file

DATA_DIR = Path(data_pkg.__file__).parent
PKG = "structure_align.data"
# the modules that replaced data/paper.py: one per format/dataset, each small
PAPER_MODULES = ("_local", "coco", "flickr30k", "cifar", "stl10", "imagenet", "imagefolder")


def _registered_by(module: str) -> set[str]:
    full = f"{PKG}.{module}"
    return ({f"dataset {n}" for n, s in DATASETS.items() if s.build.__module__ == full}
            | {f"kind {n}" for n, k in KINDS.items() if k.build.__module__ == full}
            | {f"source {n}" for n, m in SOURCE_ORIGINS.items() if m == full})


def test_discovery_finds_every_dataset_module_on_disk() -> None:
    on_disk = {p.stem for p in DATA_DIR.glob("*.py") if p.stem != "__init__"}
    assert set(DATASET_MODULES) == {m for m in on_disk if not m.startswith("_") and m not in INFRASTRUCTURE}
    assert INFRASTRUCTURE <= on_disk
    for module in DATASET_MODULES:
        assert f"{PKG}.{module}" in sys.modules
    assert not hasattr(data_pkg, "_SOURCE_MODULES") and not hasattr(data_pkg, "_OPTIONAL_MODULES")


@pytest.mark.parametrize("module", DATASET_MODULES)
def test_every_dataset_module_registers_something(module: str) -> None:
    assert _registered_by(module), f"{module}.py is scanned as a dataset module but registers nothing"


@pytest.mark.parametrize("module", sorted(INFRASTRUCTURE | {p.stem for p in DATA_DIR.glob("_*.py")}))
def test_infrastructure_and_helpers_register_nothing(module: str) -> None:
    assert not _registered_by(module)


def test_a_new_file_is_a_new_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping one file into the package path registers its source and dataset; ``_`` files are not scanned."""
    (tmp_path / "toy_new_ds.py").write_text(
        "from structure_align.data.registry import SourceSpec, register_dataset, register_source\n"
        "register_source(SourceSpec(name='toy-new-src', client='local', package='a folder', version='', sha256=''))\n"
        "@register_dataset('toy_new_ds', sources='toy-new-src', task='pairs')\n"
        "def build(resources_dir, images_dir, *, limit=None, seed=0):\n"
        "    raise NotImplementedError\n")
    (tmp_path / "_toy_helper.py").write_text("raise AssertionError('helpers are not scanned')\n")
    for name in ("DATASETS", "SOURCES", "SOURCE_ORIGINS"):
        monkeypatch.setattr(registry_mod, name, dict(getattr(registry_mod, name)))
    monkeypatch.setattr(data_pkg, "__path__", [*data_pkg.__path__, str(tmp_path)])
    found = data_pkg._dataset_modules()
    assert "toy_new_ds" in found and "_toy_helper" not in found and set(DATASET_MODULES) <= set(found)
    monkeypatch.delitem(sys.modules, f"{PKG}.toy_new_ds", raising=False)
    importlib.import_module(f"{PKG}.toy_new_ds")
    assert registry_mod.DATASETS["toy_new_ds"].sources == ("toy-new-src",)
    assert registry_mod.SOURCE_ORIGINS["toy-new-src"] == f"{PKG}.toy_new_ds"
    monkeypatch.delitem(sys.modules, f"{PKG}.toy_new_ds")


def test_file_sizes() -> None:
    for path in DATA_DIR.glob("*.py"):
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 400, f"{path.name} has {n} lines (at most 400)"
        if path.stem in PAPER_MODULES:
            assert n <= 150, f"{path.name} has {n} lines (a format/dataset module has at most 150)"
    assert not (DATA_DIR / "paper.py").exists()


def test_one_hasher_and_io_module() -> None:
    assert sha256_file is io_sha256_file
    assert not hasattr(data_pkg, "file_sha256")
    for path in DATA_DIR.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "hashlib" not in text, f"{path.name}: hash through structure_align.io"
        assert "..utils" not in text and "structure_align.utils" not in text, f"{path.name}: use structure_align.io"
        if path.name != "helpers.py":
            assert 'format="PNG"' not in text, f"{path.name}: write PNGs with helpers.save_png"


def _pil_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_save_png_bytes_and_write_if_changed(tmp_path: Path) -> None:
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    target = save_png(pixels, tmp_path / "a" / "x.png")
    assert target.read_bytes() == _pil_png(Image.fromarray(pixels, mode="RGB"))
    gray = Image.fromarray(pixels[:, :, 0], mode="L").convert("RGB")
    assert save_png(gray, tmp_path / "g.png").read_bytes() == _pil_png(gray)
    os.utime(target, (1, 1))
    save_png(pixels, target)  # same bytes: left alone
    assert target.stat().st_mtime == 1
    save_png(pixels[::-1], target)
    assert target.stat().st_mtime != 1 and np.array_equal(np.asarray(Image.open(target)), pixels[::-1])
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temp files left


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DATA_DIR.parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def test_import_is_cheap_and_survives_missing_optional_dependencies() -> None:
    code = (
        "import importlib.abc, sys\n"
        "BLOCKED = ('cairosvg', 'open_clip', 'zstandard', 'clip_benchmark', 'timm', 'torch')\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import structure_align.data as d\n"
        "assert {'tuxpaint', 'imagenet', 'cifar10', 'gcompris_explore_desc'} <= set(d.DATASETS), sorted(d.DATASETS)\n"
        "assert set(d.KINDS) == {'imagefolder', 'captions'}\n"
        "print('ok')\n"
    )
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
