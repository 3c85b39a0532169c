"""The paper's encoders (docs/paper-profile.md "Models"; docs/method.md §2) and the CLIP reference towers.

Named encoders (modality known without the hub, so ``snakemake -n`` plans offline):

* ``dinov2-vitl14`` / ``dinov2-vitg14``: timm ``vit_large_patch14_dinov2.lvd142m`` (24 blocks x 1024, the released
  default) and ``vit_giant_patch14_dinov2.lvd142m`` (40 blocks x 1536), CLS token per block (:mod:`.timm_family`);
* ``roberta-large``: ``sentence-transformers/all-roberta-large-v1`` (25 hidden states x 1024, masked mean,
  ``max_seq_length`` 128 from its sentence-transformers config; :mod:`.hf`).

Families ``clip-image:<hub id | dir>`` / ``clip-text:<hub id | dir>``: a transformers ``CLIPModel``'s **joint
space**, one layer (``image_embeds`` / ``text_embeds``, the projected embeddings). They feed the CLIP reference row
(:mod:`structure_align.reference`), which evaluates that space with the same evaluator and no training. Images are
resized to the model's square input without a centre crop and normalised with CLIP's mean/std, as the released
CLIP evaluation does; texts are tokenised with right padding (so the EOT pooling reads the real end token).

Weights come from the Hugging Face hub into its standard cache at the revision :func:`hub_revision` gives: the
environment variable :data:`REVISIONS_ENV` (a JSON object ``{hub repo: 40-hex commit}``, which the workflow's
extraction rule sets from params ``encoders.revisions``) over :data:`HUB_REVISIONS`, the pins written here. Only
``openai/clip-vit-large-patch14-336`` is pinned in code (docs/encoders.md "Hub revisions" says where the hash is
stated); the others are ``None`` (the default branch) because no commit hash of theirs could be found stated in a
public source. The commit actually loaded is written into the feature file's ``encoder_description``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .base import Encoder
from .registry import register_encoder, register_family

log = logging.getLogger(__name__)

DINOV2 = {"dinov2-vitl14": "vit_large_patch14_dinov2.lvd142m", "dinov2-vitg14": "vit_giant_patch14_dinov2.lvd142m"}
ROBERTA = "sentence-transformers/all-roberta-large-v1"
CLIP_REFERENCE = "openai/clip-vit-large-patch14-336"
# hub repository -> revision (a commit hash pins it; None = default branch, the loaded commit is recorded).
# openai/clip-vit-large-patch14-336 @ ce19dc9...: the commit that public download scripts pin
# (snapshot_download("openai/clip-vit-large-patch14-336", revision="ce19dc9...")) and that public configs load from
# the hub cache (models--openai--clip-vit-large-patch14-336/snapshots/ce19dc9...); docs/encoders.md "Hub revisions".
# The DINOv2 (timm) and all-roberta-large-v1 repositories: no commit hash found stated in a public source.
HUB_REVISIONS: dict[str, str | None] = {f"timm/{n}": None for n in DINOV2.values()} | {
    ROBERTA: None, CLIP_REFERENCE: "ce19dc912ca5cd21c8a653c79e251e808ccabcd1"}
# JSON object {hub repo: commit | null} overriding HUB_REVISIONS (set by the extraction rule from encoders.revisions)
REVISIONS_ENV = "STRUCTURE_ALIGN_HUB_REVISIONS"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_revisions(revisions: Any, where: str) -> dict[str, str | None]:
    """``{hub repo: 40-hex commit | None}`` from ``revisions``; ``ValueError`` naming ``where``, the key and the value."""
    if not isinstance(revisions, Mapping):
        raise ValueError(f"{where}: expected an object {{hub repo: commit hash}}, got {revisions!r}")  # noqa: TRY004 (a bad config value)
    out: dict[str, str | None] = {}
    for repo, commit in revisions.items():
        if not isinstance(repo, str) or not _REPO_RE.match(repo):
            raise ValueError(f"{where}: key {repo!r} is not a hub repository id 'owner/name'")
        if commit is not None and (not isinstance(commit, str) or not _COMMIT_RE.match(commit)):
            raise ValueError(f"{where}: revision of {repo!r} is {commit!r}; expected a 40-hex lower-case commit "
                             f"hash (a branch or tag name does not pin anything) or null for the default branch")
        out[repo] = commit
    return out


def env_revisions() -> dict[str, str | None]:
    """The revisions of :data:`REVISIONS_ENV` (empty when unset); a malformed value raises ``ValueError``."""
    text = os.environ.get(REVISIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"environment variable {REVISIONS_ENV}: not valid JSON ({exc}): {text!r}") from None
    return check_revisions(data, f"environment variable {REVISIONS_ENV}")


def hub_revision(repo: str) -> str | None:
    """The revision ``repo`` is loaded at: :data:`REVISIONS_ENV` first, then :data:`HUB_REVISIONS` (None = default
    branch)."""
    overrides = env_revisions()
    return overrides[repo] if repo in overrides else HUB_REVISIONS.get(repo)


def _load_dinov2(name: str, pretrained: bool = True, **model_kwargs: Any) -> Encoder:
    from .timm_family import load_timm_encoder

    arch = DINOV2[name]
    revision = hub_revision(f"timm/{arch}")
    if pretrained and revision is not None:
        model_kwargs.setdefault("pretrained_cfg_overlay", {"hf_hub_id": f"timm/{arch}@{revision}"})
    enc = load_timm_encoder(arch, pretrained=pretrained, **model_kwargs)
    enc.description += f"; revision {revision or 'default branch'}"
    return enc


@register_encoder("dinov2-vitl14", modality="vision",
                  description="DINOv2 ViT-L/14 (timm vit_large_patch14_dinov2.lvd142m, hub), CLS per block")
def load_dinov2_vitl14(**kwargs: Any) -> Encoder:
    """DINOv2 ViT-L/14 (the released code's default vision encoder)."""
    return _load_dinov2("dinov2-vitl14", **kwargs)


@register_encoder("dinov2-vitg14", modality="vision",
                  description="DINOv2 ViT-g/14 (timm vit_giant_patch14_dinov2.lvd142m, hub), CLS per block")
def load_dinov2_vitg14(**kwargs: Any) -> Encoder:
    """DINOv2 ViT-g/14 (1.1 B parameters; the table's encoder according to a secondary source)."""
    return _load_dinov2("dinov2-vitg14", **kwargs)


# what load_hf_encoder reads from the snapshot (config, weights, tokenizer, sentence-transformers' max_seq_length):
# the repository also holds onnx/, openvino/ and other exports of several GB that nothing here uses
SNAPSHOT_FILES: tuple[str, ...] = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                   "special_tokens_map.json", "sentence_bert_config.json")
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")  # first present wins


def roberta_snapshot() -> str:
    """Local snapshot of all-roberta-large-v1 at :func:`hub_revision`, restricted to :data:`SNAPSHOT_FILES` and
    one weight file (``allow_patterns``; safetensors first, the PyTorch pickle only when there is none)."""
    from huggingface_hub import snapshot_download

    revision = hub_revision(ROBERTA)
    path = snapshot_download(ROBERTA, revision=revision, allow_patterns=[*SNAPSHOT_FILES, WEIGHT_FILES[0]])
    if not (Path(path) / WEIGHT_FILES[0]).is_file():
        path = snapshot_download(ROBERTA, revision=revision, allow_patterns=[*SNAPSHOT_FILES, WEIGHT_FILES[1]])
    return path


@register_encoder("roberta-large", modality="text",
                  description="sentence-transformers all-roberta-large-v1 (hub), masked mean per hidden state")
def load_roberta_large(**kwargs: Any) -> Encoder:
    """all-roberta-large-v1 from a snapshot of its hub repository (so that its sentence-transformers config,
    ``max_seq_length`` 128, is read like for a local model directory)."""
    from .hf import load_hf_encoder

    path = roberta_snapshot()
    enc = load_hf_encoder(path, local_files_only=True, **kwargs)
    enc.description = f"{ROBERTA} (snapshot {Path(path).name})"
    return enc


class ClipImageEncoder(Encoder):
    """CLIP's projected image embedding as the one layer (``image_embeds``)."""

    modality = "vision"
    pooling = "clip_projection"

    def __init__(self, model: torch.nn.Module, *, name: str, description: str = "") -> None:
        self.model = model.eval()
        self.name, self.description = name, description
        self.layer_names = ["image_embeds"]
        self.embed_dims = [int(model.config.projection_dim)]
        self.size = int(model.config.vision_config.image_size)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize to size x size (bilinear, no crop: torchvision ``Resize((336, 336))`` of the released CLIP
        evaluation, docs/method.md §11), CLIP mean/std."""
        mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        std = torch.tensor(CLIP_STD).view(3, 1, 1)
        out = []
        for im in images:
            rgb = im.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
            arr = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3)
            out.append((arr.permute(2, 0, 1).float() / 255.0 - mean) / std)
        return torch.stack(out)

    def forward_layers(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """``get_image_features``: the projected (not yet normalised) image embedding."""
        return [_as_tensor(self.model.get_image_features(pixel_values=batch.to(self.device)))]


class ClipTextEncoder(Encoder):
    """CLIP's projected text embedding (EOT token through ``text_projection``) as the one layer."""

    modality = "text"
    pooling = "clip_projection"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str, description: str = "") -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "right"
        self.name, self.description = name, description
        self.layer_names = ["text_embeds"]
        self.embed_dims = [int(model.config.projection_dim)]
        self.max_length = int(model.config.text_config.max_position_embeddings)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """CLIP tokenizer, right padding, truncation at the context length (77)."""
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward_layers(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """``get_text_features``: the projected (not yet normalised) text embedding."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return [_as_tensor(self.model.get_text_features(**batch))]


def _as_tensor(out: Any) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from ``get_*_features``."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")


def _load_clip(spec: str) -> tuple[torch.nn.Module, dict[str, Any], str]:
    from transformers import CLIPModel

    local = Path(spec).is_dir()
    kw: dict[str, Any] = {"local_files_only": local}
    revision = None if local else hub_revision(spec)
    if revision:
        kw["revision"] = revision
    model = CLIPModel.from_pretrained(spec, **kw)
    commit = getattr(model.config, "_commit_hash", None) or ("local" if local else "unknown")
    return model, kw, f"CLIP {spec} joint space (commit {commit})"


@register_family("clip-image", modality="vision", description="transformers CLIPModel image_embeds (one layer)")
def load_clip_image(spec: str) -> ClipImageEncoder:
    """``clip-image:<hub id | dir>``: the projected image embedding of a CLIPModel."""
    model, _, desc = _load_clip(spec)
    return ClipImageEncoder(model, name=f"clip-image:{spec}", description=desc)


@register_family("clip-text", modality="text", description="transformers CLIPModel text_embeds (one layer)")
def load_clip_text(spec: str) -> ClipTextEncoder:
    """``clip-text:<hub id | dir>``: the projected text embedding of a CLIPModel, with its tokenizer."""
    from transformers import AutoTokenizer

    model, kw, desc = _load_clip(spec)
    return ClipTextEncoder(model, AutoTokenizer.from_pretrained(spec, **kw), name=f"clip-text:{spec}",
                           description=desc)
