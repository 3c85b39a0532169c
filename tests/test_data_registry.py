"""Registry and acquisition tests: specs, options, unknown names, and `acquire` with fake apt/npm clients."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from structure_align.data import (
    DATASETS,
    SOURCE_ORIGINS,
    SOURCES,
    TASKS,
    AcquireError,
    DatasetInfo,
    SourceSpec,
    UnknownNameError,
    acquire,
    get_dataset,
    get_source,
    register_dataset,
    source_dir,
)

FAKE_SHA = "0" * 64


# ------------------------------------------------------------------------------------------------ specs and names

def test_offline_datasets_registered_with_tasks_and_sources():
    expected = {"tuxpaint": ("pairs", "tuxpaint-stamps-default"), "emoji": ("pairs", "emoji-datasource-google"),
                "fashion_mnist": ("zeroshot", "dataset-fashion-mnist"), "art4apps": ("zeroshot", "pysiogame")}
    for name, (task, source) in expected.items():
        spec = get_dataset(name)
        assert (spec.task, spec.source) == (task, source)
    assert "gcompris-qt-data" in SOURCES


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_is_consistent(name):
    """Each registered dataset: known task, registered sources pinned beside its builder, accepted options."""
    spec = get_dataset(name)
    assert spec.name == name and spec.task in TASKS and spec.kind == ""
    assert spec.options["limit"] is None and spec.options["seed"] == 0
    for src in spec.sources:
        assert src in SOURCES
        # a source shared by several datasets (fashion_mnist, fashion_mnist_train) is pinned beside one of them
        owners = {get_dataset(d).build.__module__ for d in DATASETS if src in get_dataset(d).sources}
        assert SOURCE_ORIGINS[src] in owners, f"the pin of {src} is not beside a builder that uses it ({name})"
    params = inspect.signature(spec.build).parameters
    assert list(params)[:2] == ["resources_dir", "images_dir"]
    assert all(opt in params for opt in spec.options)
    assert spec.resolve_options() == spec.options


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_is_used_and_pinned(name):
    spec = get_source(name)
    assert any(name in ds.sources for ds in DATASETS.values()), f"source {name} is read by no dataset"
    assert SOURCE_ORIGINS[name].startswith("structure_align.data.")
    if spec.client == "local":
        assert spec.package and spec.files, "a local source must say what to place under resources/"
    elif spec.client == "url":
        assert spec.version and spec.files and spec.downloads and all(d.checksum[1] for d in spec.downloads)
    else:
        assert spec.version and len(spec.sha256) == 64 and spec.files


def test_pinned_offline_sources():
    assert {n for n, s in SOURCES.items() if s.client in ("apt", "npm")} == {
        "tuxpaint-stamps-default", "dataset-fashion-mnist", "gcompris-qt-data", "pysiogame",
        "emoji-datasource-google"}
    assert {n for n, s in SOURCES.items() if s.client == "url"} == {
        "coco", "cifar10", "cifar100", "stl10", "caltech101", "food101", "pets", "mnist", "dtd", "flowers102",
        "country211"}
    assert get_source("emoji-datasource-google").version == "16.0.0"


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError) as exc:
        get_dataset("no_such_dataset")
    assert isinstance(exc.value, UnknownNameError)
    assert "no_such_dataset" in str(exc.value) and "tuxpaint" in str(exc.value) and "emoji" in str(exc.value)
    with pytest.raises(UnknownNameError, match="pysiogame"):
        get_source("nope")


@pytest.mark.parametrize("kwargs, match", [
    ({"client": "pip"}, "client 'pip'"),
    ({"sha256": "abc"}, "sha256"),
    ({"version": ""}, "pinned version"),
    ({"name": "Bad Name"}, "source name"),
])
def test_source_spec_validation(kwargs, match):
    base = {"name": "x-src", "client": "apt", "package": "x", "version": "1", "sha256": FAKE_SHA}
    with pytest.raises(ValueError, match=match):
        SourceSpec(**{**base, **kwargs})


def test_local_source_needs_no_pin():
    spec = SourceSpec(name="local-x", client="local", package="a folder", version="", sha256="")
    assert spec.client == "local"


def _toy_build(resources_dir, images_dir, *, limit=None, seed=0, scale=1):
    df = pd.DataFrame({"sample_id": ["a"], "image_path": ["a.png"], "captions": [["x"]], "label": [-1],
                       "split": ["train"], "source": ["s"], "version": ["1"]})
    return df, DatasetInfo(name="toy_ds", task="pairs")


def test_register_dataset_checks_and_option_resolution(monkeypatch):
    monkeypatch.setattr("structure_align.data.registry.DATASETS", dict(DATASETS))
    from structure_align.data import registry

    register_dataset("toy_ds", task="pairs", options={"scale": 2})(_toy_build)
    spec = registry.get_dataset("toy_ds")
    assert spec.resolve_options({"limit": 5}) == {"limit": 5, "seed": 0, "scale": 2}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        spec.resolve_options({"bogus": 1})
    with pytest.raises(ValueError, match="limit"):
        spec.resolve_options({"limit": 0})
    with pytest.raises(TypeError, match="seed"):
        spec.resolve_options({"seed": "1"})
    with pytest.raises(ValueError, match="task"):
        register_dataset("toy2", task="captioning")
    with pytest.raises(ValueError, match="source 'not-a-source' is not registered"):
        register_dataset("toy3", sources="not-a-source", task="pairs")

    def no_limit(resources_dir, images_dir, *, seed=0):
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="limit"):
        register_dataset("toy4", task="pairs")(no_limit)


def test_source_dir_says_how_to_acquire(tmp_path):
    with pytest.raises(FileNotFoundError, match="acquire"):
        source_dir(tmp_path, "pysiogame")
    (tmp_path / "pysiogame").mkdir()
    (tmp_path / "pysiogame" / "SOURCE.json").write_text("{}")
    assert source_dir(tmp_path, "pysiogame") == tmp_path / "pysiogame"


# ------------------------------------------------------------------------------------------------ acquisition

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture()
def fake_bin(tmp_path, monkeypatch):
    """A PATH with fake `apt-get` / `npm` that copy a prepared archive into the cwd and log their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def _build_deb(tmp_path: Path) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (needed to build and unpack the test .deb)")
    root = tmp_path / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: toy-data\nVersion: 1.0-1\nArchitecture: all\n"
                                             "Maintainer: t <t@example.org>\nDescription: toy\n")
    (root / "usr/share/toy").mkdir(parents=True)
    (root / "usr/share/toy/a.txt").write_text("hello")
    deb = tmp_path / "toy-data_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def _apt_script(fake_bin: Path, deb: Path, log: Path, exit_code: int = 0) -> None:
    if exit_code:
        _write_exe(fake_bin / "apt-get", f'echo "$@" >> {log}\necho "E: Unable to locate package toy-data" >&2\n'
                                         f"exit {exit_code}\n")
    else:
        _write_exe(fake_bin / "apt-get", f'echo "$@" >> {log}\ncp {deb} .\n')


def _register(monkeypatch, spec: SourceSpec) -> None:
    monkeypatch.setitem(SOURCES, spec.name, spec)


def test_acquire_apt_unpacks_records_and_is_idempotent(tmp_path, fake_bin, monkeypatch):
    deb = _build_deb(tmp_path)
    log = tmp_path / "apt.log"
    _apt_script(fake_bin, deb, log)
    _register(monkeypatch, SourceSpec(name="toy-data", client="apt", package="toy-data", version="1.0-1",
                                      sha256=_sha(deb), files=("usr/share/toy/a.txt",)))
    res = tmp_path / "resources"
    dest = acquire("toy-data", res)
    assert dest == res / "toy-data"
    assert (dest / "usr/share/toy/a.txt").read_text() == "hello"
    record = json.loads((dest / "SOURCE.json").read_text())
    assert record == {"source": "toy-data", "client": "apt", "package": "toy-data", "version": "1.0-1",
                      "file": deb.name, "sha256": _sha(deb), "licence": ""}
    assert log.read_text().split() == ["download", "toy-data=1.0-1"]
    acquire("toy-data", res)  # second call: SOURCE.json matches, no fetch
    assert len(log.read_text().splitlines()) == 1
    acquire("toy-data", res, force=True)
    assert len(log.read_text().splitlines()) == 2
    assert [p.name for p in res.iterdir()] == ["toy-data"]  # no temp dirs left behind


def test_acquire_sha_mismatch_leaves_nothing(tmp_path, fake_bin, monkeypatch):
    deb = _build_deb(tmp_path)
    _apt_script(fake_bin, deb, tmp_path / "apt.log")
    _register(monkeypatch, SourceSpec(name="toy-data", client="apt", package="toy-data", version="1.0-1",
                                      sha256=FAKE_SHA))
    res = tmp_path / "resources"
    with pytest.raises(AcquireError, match="sha256 mismatch"):
        acquire("toy-data", res)
    assert not (res / "toy-data").exists()
    assert list(res.iterdir()) == []


def test_acquire_failed_fetch_suggests_apt_update(tmp_path, fake_bin, monkeypatch):
    deb = _build_deb(tmp_path)
    _apt_script(fake_bin, deb, tmp_path / "apt.log", exit_code=100)
    _register(monkeypatch, SourceSpec(name="toy-data", client="apt", package="toy-data", version="1.0-1",
                                      sha256=_sha(deb)))
    with pytest.raises(AcquireError, match="apt-get update") as exc:
        acquire("toy-data", tmp_path / "resources")
    assert "Unable to locate package" in str(exc.value)


def test_acquire_missing_expected_file(tmp_path, fake_bin, monkeypatch):
    deb = _build_deb(tmp_path)
    _apt_script(fake_bin, deb, tmp_path / "apt.log")
    _register(monkeypatch, SourceSpec(name="toy-data", client="apt", package="toy-data", version="1.0-1",
                                      sha256=_sha(deb), files=("usr/share/toy/missing.txt",)))
    with pytest.raises(AcquireError, match="missing.txt"):
        acquire("toy-data", tmp_path / "resources")
    assert not (tmp_path / "resources" / "toy-data").exists()


def test_acquire_missing_client(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _register(monkeypatch, SourceSpec(name="toy-npm", client="npm", package="toy", version="1.0.0", sha256=FAKE_SHA))
    with pytest.raises(AcquireError, match="`npm` was not found"):
        acquire("toy-npm", tmp_path / "resources")
    _register(monkeypatch, SourceSpec(name="toy-data", client="apt", package="toy-data", version="1", sha256=FAKE_SHA))
    with pytest.raises(AcquireError, match="`apt-get` was not found"):
        acquire("toy-data", tmp_path / "resources")


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_acquire_npm_strips_package_prefix(tmp_path, fake_bin, monkeypatch):
    tgz = _tgz(tmp_path / "toy-1.0.0.tgz", {"package/emoji.json": b"[]", "package/img/a.png": b"x"})
    log = tmp_path / "npm.log"
    _write_exe(fake_bin / "npm", f'echo "$@" >> {log}\ncp {tgz} .\n')
    _register(monkeypatch, SourceSpec(name="toy-npm", client="npm", package="toy", version="1.0.0",
                                      sha256=_sha(tgz), files=("emoji.json", "img/a.png")))
    dest = acquire("toy-npm", tmp_path / "resources")
    assert (dest / "emoji.json").read_bytes() == b"[]" and not (dest / "package").exists()
    assert "toy@1.0.0" in log.read_text()
    assert json.loads((dest / "SOURCE.json").read_text())["file"] == tgz.name


def test_acquire_npm_rejects_path_traversal(tmp_path, fake_bin, monkeypatch):
    tgz = _tgz(tmp_path / "evil-1.0.0.tgz", {"package/../../escape.txt": b"x"})
    _write_exe(fake_bin / "npm", f"cp {tgz} .\n")
    _register(monkeypatch, SourceSpec(name="toy-npm", client="npm", package="evil", version="1.0.0",
                                      sha256=_sha(tgz)))
    with pytest.raises(AcquireError, match="unsafe tar member"):
        acquire("toy-npm", tmp_path / "resources")
    assert not (tmp_path / "escape.txt").exists()


def test_acquire_local_source(tmp_path, monkeypatch):
    _register(monkeypatch, SourceSpec(name="toy-local", client="local", package="the COCO folder", version="",
                                      sha256="", files=("images",)))
    with pytest.raises(AcquireError, match="the COCO folder"):
        acquire("toy-local", tmp_path)
    (tmp_path / "toy-local" / "images").mkdir(parents=True)
    dest = acquire("toy-local", tmp_path)
    assert json.loads((dest / "SOURCE.json").read_text())["client"] == "local"
