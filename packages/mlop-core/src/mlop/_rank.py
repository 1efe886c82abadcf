"""Which process of a distributed job this is, and the built-in plugin that answers from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlop._types import RankInfo
from mlop.hookspecs import hookimpl

__all__ = ["RankInfo", "rank_from_environ"]


def _int(environ: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def rank_from_environ(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Read the rank from the variables torchrun, SLURM and MPI launchers set."""
    env = os.environ if environ is None else environ
    rank = _int(env, "RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    local = _int(env, "LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")
    world = _int(env, "WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
    return RankInfo(rank=rank or 0, local_rank=local or 0, world_size=world or 1)


class EnvironmentRank:
    """Core's built-in plugin: the rank from the environment, asked after every integration."""

    @hookimpl(trylast=True)
    def mlop_rank(self) -> RankInfo:
        return rank_from_environ()
