"""Several processes, one program: start-up, each process's rows, arrays across processes.

Under ``jax.distributed`` every process runs the same program on its own devices and
its own rows of the data; arrays whose devices span processes are built from each
process's part. On one process the same functions are the identity or a copy, so
``fit`` has one code path.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["allgather", "global_array", "initialize", "process_rows", "replicate", "to_host"]


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 100,
) -> None:
    """Joins this process to a job of several, before any other JAX call.

    Arguments left ``None`` are read from the environment as
    ``jax.distributed.initialize`` reads them (``JAX_COORDINATOR_ADDRESS``, Slurm,
    Open MPI, Cloud TPU). CPU devices exchange data with Gloo.

    Args:
        coordinator: ``host:port`` of process 0, which serves the coordination there.
        num_processes: Processes in the job.
        process_id: This process's index, in ``[0, num_processes)``.
        timeout: Seconds to wait for the other processes to connect, and after
            which a process that sends no heartbeat is declared dead: the others then
            end with an error instead of waiting for it forever.

    Raises:
        ValueError: For a ``process_id`` out of ``[0, num_processes)``.
        TimeoutError: If process 0 does not accept connections within ``timeout``.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if None not in (num_processes, process_id) and not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, {num_processes}) for {num_processes} processes, "
            f"got {process_id}"
        )
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator and process_id:  # XLA aborts the process if it cannot: say why first
        _wait_for(coordinator, timeout)
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=timeout,
        shutdown_timeout_seconds=timeout,
    )


def _wait_for(address: str, timeout: float) -> None:
    """Waits until ``host:port`` accepts connections.

    Raises:
        TimeoutError: If it does not within ``timeout`` seconds.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not reach the coordinator {address} (process 0) within {timeout} s"
                ) from None
            time.sleep(0.2)


def process_rows(rows: int, index: int | None = None, count: int | None = None) -> slice:
    """The rows of process ``index`` of ``count``: contiguous blocks, sizes within one.

    Example:
        >>> process_rows(10, 1, 3)
        slice(4, 7, None)
    """
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    start, stop = (i * (rows // count) + min(i, rows % count) for i in (index, index + 1))
    return slice(start, stop)


def allgather(array) -> np.ndarray:
    """Every process's ``array`` (same shape everywhere), stacked on a new first axis."""
    if jax.process_count() == 1:
        return np.asarray(array)[None]
    return np.asarray(multihost_utils.process_allgather(np.asarray(array)))


def global_array(local: np.ndarray, sharding, rows: int) -> jax.Array:
    """The array of ``rows`` rows whose rows on this process's devices are ``local``.

    Without ``sharding``, ``local`` is the whole array, on the default device.
    """
    if sharding is None:
        return jax.numpy.asarray(local)
    return jax.make_array_from_process_local_data(sharding, local, (rows, *local.shape[1:]))


def replicate(tree, sharding):
    """``tree``'s arrays copied to every device of ``sharding`` (each process gives its copy)."""
    if sharding is None:
        return tree

    def put(leaf):
        host = np.asarray(to_host(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(array) -> np.ndarray:
    """A replicated array's value, read from this process's first copy."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        array = array.addressable_data(0)
    return np.asarray(array)
