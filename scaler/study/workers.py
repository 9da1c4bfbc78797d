"""Local worker processes sharing one study's storage and trial budget; SIGTERM stops like Ctrl-C."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

from scaler.study.storage import redact


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Signal handler: SIGTERM stops like Ctrl-C, so a running trial is recorded and queued again."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


WORKER_MEMORY = 1_500_000_000  # bytes one local worker holds on Fashion-MNIST (about 1.1 GB measured)


def max_workers() -> int:
    """Local workers this machine can hold: one per core, and no more than its available memory allows."""
    from scaler.model.guard import available_memory

    cores = os.cpu_count() or 1
    memory = available_memory()
    return max(1, min(cores, cores if memory is None else memory // WORKER_MEMORY))


def run_workers(
    target: Callable[..., None], args: tuple[Any, ...], workers: int, storage: str, log: Callable[[str], None] = print
) -> str | None:
    """Run `target(*args, threads)` in `workers` spawned processes that share `storage`, the cores split evenly.

    Returns what went wrong when a worker crashed, None when all ended well. Interrupted, it stops every
    worker (each queues its running trial again) and waits for them before the interruption goes on up.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads of several workers starve each other
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=(*args, threads)) for _ in range(workers)]
    log(f"{workers} workers, {threads} thread(s) each, sharing {redact(storage)}")
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
        raise
    crashed = [f"worker {i + 1} exited with status {p.exitcode}" for i, p in enumerate(processes) if p.exitcode]
    return ", ".join(crashed) or None


def worker_process(work: Callable[[], Any]) -> None:
    """Run a worker process's work: SIGTERM stops it like Ctrl-C (exit 130); a user error exits 2, a failure 1."""
    import sys

    from scaler.errors import RunFailed, UserError

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        work()
    except KeyboardInterrupt:
        sys.exit(130)
    except (UserError, RunFailed) as error:
        print(f"scaler worker: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2 if isinstance(error, UserError) else 1)
