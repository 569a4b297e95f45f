"""Which process of a multi-process job this is, read from the environment before anything starts (no JAX):
for a command that one process runs for all of them, such as `python -m cfjax.data.prepare`."""

import os
from collections.abc import Mapping

# (index, count) variables of the launchers cfjax knows: its own (cfjax.launch) and JAX's, SLURM, Open MPI, MPICH.
_RANK_VARIABLES = (("JAX_PROCESS_ID", "JAX_NUM_PROCESSES"), ("SLURM_PROCID", "SLURM_NTASKS"),
                   ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"))


def process_rank(environ: Mapping[str, str] = os.environ) -> tuple[int, int, str] | None:
    """(index, count, the variable giving the index) when this process is one of several, else None."""
    for rank, size in _RANK_VARIABLES:
        try:
            index, count = int(environ[rank]), int(environ[size])
        except (KeyError, ValueError):
            continue
        if count > 1:
            return index, count, rank
    return None
