"""Pool every block's output the moment it is produced (docs/method.md §2; docs/paper-profile.md "GPU memory").

Collecting the full token output of every block (``forward_intermediates`` with all indices,
``output_hidden_states=True``) holds ``n_blocks x B x T x D`` activations before any pooling: for DINOv2 ViT-g/14 at
518 px and batch 256 that is 40 x 256 x 1370 x 1536 float32 values, 86 GB. Forward hooks on the block modules pool
each output (CLS token, masked mean) as it leaves its block, so only one block's activations are alive at a time
plus ``n_blocks x B x D`` pooled vectors. The pooling reads the very tensor the block returned, so the features are
bit-identical to pooling the collected outputs (tests/test_encoders.py checks old against new).

Under ``torch.autocast`` the residual stream stays float32 (each block adds its bf16/fp16 branch output onto a float32
stream), so the tensor a hook sees has the dtype the collected hidden states had.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def _block_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's return value (transformers layers may return a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output).__name__}")


@contextlib.contextmanager
def pooled_block_outputs(modules: Sequence[torch.nn.Module],
                         pool: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Forward hooks on ``modules``: yields a list that, after one forward pass, holds ``pool(output of module i)``
    in module order. A pooled tensor that is a view of the block output (the CLS token) is copied, so that nothing
    keeps a block's full output alive once the next block has consumed it. The hooks are removed on exit, even after
    an error."""
    slots: list[torch.Tensor | None] = [None] * len(modules)
    result: list[torch.Tensor] = []

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            hidden = _block_tensor(output)
            pooled = pool(hidden)
            if pooled.untyped_storage().data_ptr() == hidden.untyped_storage().data_ptr():
                # a view (CLS = h[:, 0]) would keep the block's whole [B, T, D] output alive: copy the rows out
                pooled = pooled.clone()
            slots[i] = pooled
        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, s in enumerate(slots) if s is None]
    if missing:
        raise RuntimeError(f"blocks {missing[:5]} of {len(modules)} did not run in the forward pass")
    result.extend(s for s in slots if s is not None)
