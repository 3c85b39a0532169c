"""Per-block pooling (encoders/blocks.py): the hooked forwards give bit-identical features to pooling the collected
hidden states of every block, with and without bf16 autocast, and never ask the model to collect all of them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_models import make_tiny_bert, make_tiny_dinov2, make_tiny_roberta, make_tiny_vit

from structure_align.encoders import cls_token, load_encoder, masked_mean
from structure_align.encoders.blocks import pooled_block_outputs

torch.set_num_threads(1)
TEXTS = ["a cat on a mat", "two dogs running in the park with a red ball", "x", "hello there"]


def _images(n: int = 3) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray(torch.randint(0, 256, (40 + 6 * i, 52, 3), generator=g, dtype=torch.uint8).numpy())
            for i in range(n)]


def _collected(enc, batch) -> list[torch.Tensor]:
    """Reference: every hidden state collected by the model, then pooled (the pre-hook extraction)."""
    m = enc.model
    if enc.name.startswith("hf:") and enc.modality == "text":
        hs = m(**batch, output_hidden_states=True).hidden_states
        return [masked_mean(h, batch["attention_mask"]) for h in hs]
    if enc.name.startswith("hf:"):
        return [cls_token(h) for h in m(pixel_values=batch, output_hidden_states=True).hidden_states[1:]]
    if enc.name.startswith("timm:"):
        out = m.forward_intermediates(batch, indices=None, return_prefix_tokens=True, norm=False,
                                      output_fmt="NLC", intermediates_only=True)
        return [prefix[:, 0] for _, prefix in out]
    if enc.modality == "vision":
        out = m.visual.forward_intermediates(batch, intermediates_only=True, output_fmt="NLC",
                                             output_extra_tokens=True)
        return [p[:, 0] for p in out["image_intermediates_prefix"]]
    out = m.forward_intermediates(text=batch["input_ids"], intermediates_only=True)
    return [masked_mean(h, batch["attention_mask"]) for h in out["text_intermediates"]]


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    encs = [load_encoder(f"hf:{make(tmp_path_factory.mktemp(name))}", device="cpu")
            for name, make in (("bert", make_tiny_bert), ("roberta", make_tiny_roberta), ("vit", make_tiny_vit),
                               ("dinov2", make_tiny_dinov2))]
    torch.manual_seed(0)
    encs.append(load_encoder("timm:vit_tiny_patch16_224", device="cpu", pretrained=False, depth=3))
    torch.manual_seed(0)
    encs.append(load_encoder("openclip-image:ViT-S-32:none", device="cpu"))
    torch.manual_seed(0)
    encs.append(load_encoder("openclip-text:ViT-S-32:none", device="cpu"))
    return encs


@pytest.mark.parametrize("autocast", [False, True])
def test_hooked_forward_equals_collected_hidden_states(tiny_encoders, autocast):
    for enc in tiny_encoders:
        batch = enc.preprocess(_images()) if enc.modality == "vision" else enc.tokenize(TEXTS)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
        with torch.inference_mode(), ctx:
            new = enc.forward_layers(batch)
            ref = _collected(enc, batch)
        assert len(new) == len(ref) == enc.n_layers, enc.name
        for i, (a, b) in enumerate(zip(new, ref, strict=True)):
            assert a.dtype == b.dtype and torch.equal(a, b), f"{enc.name} layer {i} (autocast {autocast})"


def test_hf_forward_does_not_collect_hidden_states(tiny_encoders):
    seen = []
    for enc in tiny_encoders[:4]:
        hook = enc.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("output_hidden_states")),
                                                   with_kwargs=True)
        batch = enc.preprocess(_images()) if enc.modality == "vision" else enc.tokenize(TEXTS)
        with torch.inference_mode():
            enc.forward_layers(batch)
        hook.remove()
    assert seen == [None] * 4


def test_pooled_block_outputs_order_tuple_outputs_and_missing_blocks():
    class Block(torch.nn.Module):
        def __init__(self, k: float, as_tuple: bool) -> None:
            super().__init__()
            self.k, self.as_tuple = k, as_tuple

        def forward(self, x):
            y = x + self.k
            return (y, None) if self.as_tuple else y

    blocks = [Block(1.0, False), Block(2.0, True), Block(3.0, False)]
    x = torch.zeros(2, 4, 5)
    with pooled_block_outputs(blocks, lambda h: h[:, 0]) as feats:
        h = x
        for b in blocks:
            out = b(h)
            h = out[0] if isinstance(out, tuple) else out
    assert [f[0, 0].item() for f in feats] == [1.0, 3.0, 6.0]
    assert all(not b._forward_hooks for b in blocks)  # hooks removed
    with pytest.raises(RuntimeError, match=r"blocks \[2\]"), pooled_block_outputs(blocks, lambda h: h[:, 0]):
        blocks[0](x)
        blocks[1](x)


def test_block_outputs_are_freed_as_the_forward_proceeds(tiny_encoders):
    """When block i finishes, the full outputs of blocks < i - 1 are gone: only the pooled rows are kept (the former
    extraction kept every block's [B, T, D] output until the end of the forward pass)."""
    import weakref

    from structure_align.encoders.blocks import _block_tensor
    from structure_align.encoders.hf import _layer_modules

    for enc in tiny_encoders:
        m = enc.model
        if enc.name.startswith("timm:"):
            blocks = list(m.blocks)
        elif enc.name.startswith("openclip-image"):
            blocks = list(m.visual.transformer.resblocks)
        elif enc.name.startswith("openclip-text"):
            blocks = list(m.transformer.resblocks)
        else:
            blocks = _layer_modules(m)
        refs: list[weakref.ref] = []
        alive: list[int] = []

        def track(_m, _a, out, refs=refs, alive=alive):
            refs.append(weakref.ref(_block_tensor(out)))
            alive.append(sum(r() is not None for r in refs[:-2]))
        handles = [b.register_forward_hook(track) for b in blocks]
        batch = enc.preprocess(_images()) if enc.modality == "vision" else enc.tokenize(TEXTS)
        with torch.inference_mode():
            feats = enc.forward_layers(batch)
        for h in handles:
            h.remove()
        assert len(alive) == len(blocks) and max(alive) == 0, f"{enc.name}: {alive}"
        # a pooled row that were a view (CLS = h[:, 0]) would pin its block's whole output through the storage
        assert all(f.untyped_storage().nbytes() == f.numel() * f.element_size() for f in feats), enc.name
