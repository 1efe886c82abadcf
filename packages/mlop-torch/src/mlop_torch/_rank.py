"""Which process of a distributed job this is, from ``torch.distributed``."""

from __future__ import annotations

import logging
import os

import torch

from mlop import RankInfo

__all__ = ["distributed_rank"]

logger = logging.getLogger(__name__)


def distributed_rank() -> RankInfo | None:
    """The rank, local rank and world size of an initialised default process group; None without one.

    The local rank is ``LOCAL_RANK`` when the launcher set it, else the rank within this node's group.
    """
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return None
    rank = dist.get_rank()
    world = dist.get_world_size()
    local = os.environ.get("LOCAL_RANK", "").strip()
    if local.isdigit():
        local_rank = int(local)
    else:
        try:
            local_rank = int(dist.get_node_local_rank(fallback_rank=rank))
        except Exception:  # broad: older torch has no get_node_local_rank; the global rank is a fair guess
            local_rank = rank
    return RankInfo(rank=rank, local_rank=local_rank, world_size=world)
