"""all-roberta-large-v1 is fetched without the exports nothing reads (issue 21 item 6): the snapshot's
``allow_patterns`` are applied by huggingface_hub's own filter to the repository's file list, and the revision pin
still reaches the download."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from structure_align.encoders import paper

# a file list shaped like that of sentence-transformers/all-roberta-large-v1 (weights in several formats, the
# sentence-transformers modules, onnx / openvino exports); the exact list differs between revisions
REPO_FILES = ["config.json", "config_sentence_transformers.json", "data_config.json", "merges.txt", "modules.json",
              "model.safetensors", "pytorch_model.bin", "rust_model.ot", "sentence_bert_config.json",
              "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "train_script.py", "vocab.json",
              "1_Pooling/config.json", "onnx/config.json", "onnx/model.onnx", "onnx/model_O4.onnx",
              "onnx/model_qint8_avx512.onnx", "onnx/tokenizer.json", "openvino/openvino_model.bin",
              "openvino/openvino_model.xml", "README.md"]


def _fake_hub(tmp_path: Path, files: list[str], calls: list[dict]):
    def snapshot_download(repo_id: str, *, revision=None, allow_patterns=None, **kwargs) -> str:
        calls.append({"repo": repo_id, "revision": revision, "allow": list(allow_patterns or [])})
        out = tmp_path / f"snap{len(calls)}"
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("x")
        return str(out)
    return snapshot_download


def _fetched(path: str) -> set[str]:
    return {p.relative_to(path).as_posix() for p in Path(path).rglob("*") if p.is_file()}


def test_snapshot_is_restricted_to_what_the_loader_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_hub(tmp_path, REPO_FILES, calls))
    pin = "a" * 40
    monkeypatch.setenv(paper.REVISIONS_ENV, f'{{"{paper.ROBERTA}": "{pin}"}}')
    got = _fetched(paper.roberta_snapshot())
    assert got == {*paper.SNAPSHOT_FILES, "model.safetensors"}  # no onnx/, openvino/, second or third weights
    assert calls == [{"repo": paper.ROBERTA, "revision": pin, "allow": [*paper.SNAPSHOT_FILES, "model.safetensors"]}]


def test_pytorch_weights_only_when_there_are_no_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: list[dict] = []
    files = [f for f in REPO_FILES if f != "model.safetensors"]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_hub(tmp_path, files, calls))
    monkeypatch.delenv(paper.REVISIONS_ENV, raising=False)
    got = _fetched(paper.roberta_snapshot())
    assert got == {*paper.SNAPSHOT_FILES, "pytorch_model.bin"} and len(calls) == 2
    assert calls[1]["revision"] is None and "onnx/model.onnx" not in got
