"""Where ``maf-jax fit`` runs: the processes of a job, the devices, the training state.

Options name a ``jax.distributed`` job (or leave it to the environment), the devices
of each process, and the file that holds the training state between a stop and a
``--resume``; the checks here refuse, before any work, a file that would lose a
stopped run's state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from maf_jax.checkpoint.files import CHECKPOINTS, OutputError, check_output
from maf_jax.data.loaders import DataError
from maf_jax.train.distributed import initialize

__all__ = ["in_job", "join", "mesh_of", "train_checkpoint"]


def join(args) -> bool:
    """Joins a ``jax.distributed`` job if the options ask for one; whether they did."""
    given = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(value is None for value in given):
        return False

    try:
        initialize(args.coordinator, args.num_processes, args.process_id, args.timeout)
    except TimeoutError as error:
        raise ValueError(str(error)) from None
    except RuntimeError as error:  # a second initialisation, say
        where = f" at {args.coordinator}" if args.coordinator else ""
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"could not join the job{where} in {args.timeout} s: {first}") from None
    return True


def mesh_of(args, distributed: bool):
    """The devices to train on: ``--devices`` of each process, process 0's first."""
    local = jax.local_devices()
    count = args.devices or (len(local) if distributed else 1)
    if count > len(local):
        raise DataError(f"--devices {count}: this process has {len(local)} device(s)")
    if not distributed:
        return None if count == 1 else jax.make_mesh((count,), ("data",), devices=local[:count])
    devices = [
        [d for d in jax.devices() if d.process_index == p][:count]
        for p in range(jax.process_count())
    ]
    return jax.sharding.Mesh(np.array(devices).reshape(-1), ("data",))


def train_checkpoint(args, output: Path, summary: Path) -> Path:
    """The training checkpoint's path, checked: one left by a stopped run is not overwritten."""
    default = output.with_suffix(".train.npz")
    path = check_output(args.train_checkpoint or default, CHECKPOINTS, [args.data, args.context])
    if path.resolve() in (output.resolve(), summary.resolve()):
        raise OutputError(f"{path}: is written twice; give each output its own file")
    if path.exists() and (args.resume is None or Path(args.resume).resolve() != path.resolve()):
        raise OutputError(
            f"{path}: holds the training state of a stopped run: continue it with "
            f"--resume {path}, or delete it"
        )
    return path


def in_job() -> bool:
    """Whether this process is one of a ``jax.distributed`` job."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.process_count() > 1
