"""Chunks of a run on many processes or machines, through Dask's distributed scheduler.

Why Dask: it is pure Python and pip-installable (a laptop, a lab server and an HPC cluster run the
same code: ``LocalCluster`` here, ``dask-scheduler`` / ``dask-worker``, dask-jobqueue or
dask-kubernetes there); its scheduler reruns the tasks of a worker that dies on the other workers
(``allowed-failures``) and retries a task that raised (``retries``); and results come back as they
finish (``as_completed``), so the caller writes each one at once. Ray offers the same, with a much
larger install and its own object store, which chunks of a few MB do not need.

A chunk's result is delivered once, by index, whatever retries happened: nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable

from wbc.errors import UsageError


def map_chunks(task: Callable[..., Any], chunks: Iterable[tuple], on_result: Callable[[int, Any], None], workers: int | None = None,
               scheduler: str | None = None, retries: int = 2, progress: Callable | None = None) -> None:
    """Run ``task(*args)`` for each ``(index, args)`` of ``chunks`` on a local cluster of ``workers``
    processes, or on the cluster at ``scheduler`` (an address such as ``tcp://10.0.0.5:8786``), and call
    ``on_result(index, result)`` in this process as each one finishes. A task that fails ``retries``
    times more, or whose workers keep dying, stops the run with the chunk named."""
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    chunks = list(chunks)
    if not chunks:
        return
    cluster = None
    if scheduler is None:
        # Dask's sampling profiler walks the worker threads' stacks every 10 ms under the GIL: off, a chunk costs
        # about a fifth less CPU here
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                                   memory_limit=0, silence_logs=logging.ERROR)
    try:
        client = Client(cluster or scheduler, timeout="30s")
    except OSError as e:
        raise UsageError(f"--scheduler {scheduler}: no Dask scheduler answers there ({e})") from None
    try:
        futures = {client.submit(task, *args, key=f"wbc-chunk-{index}-{os.getpid()}", retries=retries, pure=False): index
                   for index, args in chunks}
        done: set[int] = set()
        for future in (progress or (lambda it, total: it))(as_completed(futures), len(futures)):
            index = futures[future]
            if index in done:
                continue
            try:
                result = future.result()
            except Exception as e:  # noqa: BLE001 -- the task's own error, after its retries
                raise RuntimeError(f"chunk {index} failed on every try: {type(e).__name__}: {e}") from e
            done.add(index)
            on_result(index, result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
