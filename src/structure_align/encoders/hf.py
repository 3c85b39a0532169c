"""Hugging Face ``transformers`` encoders: the ``hf:<model id or local dir>`` family (docs/method.md §2).

* text models: every entry of ``hidden_states`` (embedding output + each block), attention-masked mean over tokens,
  **right** padding (the released code pads left; with masked-mean pooling and absolute position ids right padding
  is the variant whose features do not depend on the batch's padding, see docs/encoders.md);
* vision models (ViT-style, ``config.image_size``/``patch_size``): CLS token of every block output; the embedding
  output (``hidden_states[0]``) is dropped, as in the released code's ``blocks.{i}.add_1`` return nodes, and the
  final LayerNorm is not applied.

Preprocessing is the model's own: its tokenizer, or its image processor config. Where the model has the usual
``embeddings`` + ``encoder.layer`` (or ``layers``) modules (BERT, RoBERTa, MPNet, ViT, DINOv2 ...), each hidden state is pooled as its
module produces it (forward hooks, :mod:`.blocks`) instead of collecting ``output_hidden_states``; other layouts fall
back to ``output_hidden_states``. Both give the same tensors, so the same features.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .base import Encoder
from .blocks import pooled_block_outputs
from .pooling import cls_token, masked_mean
from .registry import register_family

log = logging.getLogger(__name__)

# tokenizers without a real limit report int(1e30) as model_max_length
_UNBOUNDED_MAX_LENGTH = 100_000


def _layer_modules(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The block modules of a transformers model in order (``encoder.layer``, or ``layers`` / ``encoder.layers``
    in newer layouts), or None for other layouts."""
    encoder = getattr(model, "encoder", None)
    for layers in (getattr(encoder, "layer", None), getattr(model, "layers", None), getattr(encoder, "layers", None)):
        if isinstance(layers, torch.nn.ModuleList) and len(layers):
            return list(layers)
    return None


def _load_config(spec: str, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec, **kwargs)


def _config_modality(config: Any, spec: str) -> str:
    """``vision`` for ViT-style configs (image_size + patch_size), ``text`` for configs with a vocabulary."""
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
        raise ValueError(f"hf:{spec} is a two-tower model ({config.model_type}); use the openclip-image/-text "
                         f"families or register a dedicated encoder")
    if hasattr(config, "image_size") and hasattr(config, "patch_size"):
        return "vision"
    if getattr(config, "vocab_size", None):
        return "text"
    raise ValueError(f"cannot tell the modality of hf:{spec} (model_type={config.model_type!r}): neither "
                     f"image_size/patch_size nor vocab_size in its config")


def hf_modality(spec: str) -> str:
    """Modality of ``hf:<spec>`` from its config alone (no weights are read)."""
    return _config_modality(_load_config(spec), spec)


def text_max_length(model_dir: str | Path | None, tokenizer: Any, config: Any) -> int:
    """Truncation length: sentence-transformers' ``max_seq_length`` if the directory has one, else the tokenizer's
    ``model_max_length``, else the position-embedding count of the config."""
    if model_dir is not None:
        st_cfg = Path(model_dir) / "sentence_bert_config.json"
        if st_cfg.is_file():
            value = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
            if value:
                return int(value)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < _UNBOUNDED_MAX_LENGTH:
        return int(tok_max)
    pos = getattr(config, "max_position_embeddings", None)
    if pos:
        return int(pos)
    raise ValueError("cannot determine a max_length: no sentence_bert_config.json, tokenizer limit or "
                     "max_position_embeddings")


class HFTextEncoder(Encoder):
    """Masked mean of every hidden state of a transformers text model (docs/method.md §2, text features)."""

    pooling = "masked_mean"
    modality = "text"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str, max_length: int,
                 description: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        # right padding: padded positions sit after the text, so position ids of real tokens never shift
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"tokenizer of {name} has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name, self.max_length, self.description = name, int(max_length), description
        cfg = model.config
        n_states = int(cfg.num_hidden_layers) + 1
        self.layer_names = ["embeddings"] + [f"layer.{i}" for i in range(n_states - 1)]
        self.embed_dims = [int(cfg.hidden_size)] * n_states

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text of the batch (right), truncate at ``max_length``."""
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, got one string")
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    def forward_layers(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Masked mean of each of the ``num_hidden_layers + 1`` hidden states."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        mask = batch["attention_mask"]
        layers = _layer_modules(self.model)
        embeddings = getattr(self.model, "embeddings", None)
        if layers is None or not isinstance(embeddings, torch.nn.Module) or len(layers) + 1 != self.n_layers:
            out = self.model(**batch, output_hidden_states=True)
            return [masked_mean(h, mask) for h in out.hidden_states]
        # hidden_states[0] is the embeddings module's output, hidden_states[i + 1] block i's
        with pooled_block_outputs([embeddings, *layers], lambda h: masked_mean(h, mask)) as feats:
            self.model(**batch)
        return feats


class HFVisionEncoder(Encoder):
    """CLS token of every block of a ViT-style transformers model (docs/method.md §2, vision features)."""

    pooling = "cls"
    modality = "vision"

    def __init__(self, model: torch.nn.Module, image_processor: Any, *, name: str, description: str = "") -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.name, self.description = name, description
        cfg = model.config
        n_blocks = int(cfg.num_hidden_layers)
        self.layer_names = [f"block.{i}" for i in range(n_blocks)]
        self.embed_dims = [int(cfg.hidden_size)] * n_blocks

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's image processor (resize/crop/normalise from its preprocessor config), RGB forced."""
        rgb = [im.convert("RGB") for im in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def forward_layers(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """CLS token of each block output; ``hidden_states[0]`` (patch + position embeddings) is dropped."""
        layers = _layer_modules(self.model)
        if layers is None or len(layers) != self.n_layers:
            out = self.model(pixel_values=batch.to(self.device), output_hidden_states=True)
            return [cls_token(h) for h in out.hidden_states[1:]]
        with pooled_block_outputs(layers, cls_token) as feats:
            self.model(pixel_values=batch.to(self.device))
        return feats


@register_family("hf", modality=hf_modality,
                 description="any transformers AutoModel (vision: CLS per block; text: masked mean per state)")
def load_hf_encoder(spec: str, *, local_files_only: bool | None = None, revision: str | None = None) -> Encoder:
    """``hf:<spec>``: a transformers AutoModel (weights from the hub or a local directory) with its own preprocessing.

    ``local_files_only`` defaults to True when ``spec`` is an existing directory.
    """
    from transformers import AutoModel

    is_dir = Path(spec).is_dir()
    lfo = is_dir if local_files_only is None else local_files_only
    kw: dict[str, Any] = {"local_files_only": lfo}
    if revision is not None:
        kw["revision"] = revision
    config = _load_config(spec, **kw)
    modality = _config_modality(config, spec)
    model = AutoModel.from_pretrained(spec, **kw)
    if modality == "text":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec, **kw)
        return HFTextEncoder(model, tokenizer, name=f"hf:{spec}", max_length=text_max_length(
            spec if is_dir else None, tokenizer, config), description=f"transformers {config.model_type} {spec}")
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(spec, **kw)
    return HFVisionEncoder(model, processor, name=f"hf:{spec}",
                           description=f"transformers {config.model_type} {spec}")
