"""Torch tensors as values ``run.log`` and the data types take."""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["convert_tensor"]

logger = logging.getLogger(__name__)

_WIDEN = (torch.float16, torch.bfloat16)


def convert_tensor(value: Any) -> Any | None:
    """A tensor as a Python number (one element) or a numpy array on the host (any other shape).

    ``run.log`` takes the number; ``mlop.Histogram``, ``mlop.Image``, ``mlop.Audio`` and ``mlop.Video`` take
    the array. A tensor on a GPU, one that requires grad, a sparse one or a distributed one (this rank's
    shard: gathering the whole value would be a collective) are all copied to the host once.

    Returns None for anything that is not a tensor.
    """
    if not isinstance(value, torch.Tensor):
        return None
    tensor = value.detach()
    if hasattr(tensor, "to_local"):  # a DTensor: this rank's shard (the whole value is a collective)
        tensor = tensor.to_local()
    if tensor.is_sparse:
        tensor = tensor.to_dense()
    if tensor.numel() == 1:
        return tensor.item()
    if tensor.dtype in _WIDEN:
        tensor = tensor.to(torch.float32)
    return tensor.cpu().resolve_conj().resolve_neg().numpy()
