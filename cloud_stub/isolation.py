"""Uploaded models run in separate worker processes under memory, time and thread limits.

A model of a few kilobytes can ask onnxruntime or torch for any amount of memory or
time (a huge ``Conv`` output, ``Expand`` to a large shape), and the static checks at
upload cannot see everything. So the server never runs one in its own process: the
upload check, the verification and head training run in a pool of spawned worker
processes (`pebble <https://pypi.org/project/Pebble/>`_), each with an address-space
limit (``RLIMIT_AS``) and a fixed number of threads, and every job has a wall-clock
limit. A job that breaks a limit raises :class:`JobLimitError`, its worker is replaced,
and the server goes on serving.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from cloud_stub.errors import CloudStubError

__all__ = ["IsolatedRunner", "JobLimitError", "JobLimits", "RunnerClosedError"]

T = TypeVar("T")

_MIB = 1 << 20
MIN_MEMORY_MIB = 1024  # importing torch and onnxruntime takes about 900 MiB of address space
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class JobLimitError(CloudStubError):
    """A job needed more memory or time than its limit, or its worker process died."""


class RunnerClosedError(CloudStubError):
    """The runner was closed (the server is stopping); the job did not finish and may be run again."""


@dataclass(frozen=True, kw_only=True)
class JobLimits:
    """What one job may use.

    Attributes:
        memory_mib: Address-space limit (``RLIMIT_AS``) of the worker process, in MiB,
            at least :data:`MIN_MEMORY_MIB`; ``None`` for no limit. Importing torch and
            onnxruntime takes about 0.9 GiB of address space, a Fashion-MNIST
            verification about 2 GiB.
        seconds: Wall-clock limit of one job, in seconds.
        threads: torch and OpenMP threads of the worker process.
    """

    memory_mib: int | None
    seconds: float
    threads: int = 1

    def __post_init__(self) -> None:
        if self.memory_mib is not None and self.memory_mib < MIN_MEMORY_MIB:
            raise ValueError(f"memory_mib must be at least {MIN_MEMORY_MIB}, got {self.memory_mib}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


def _apply_limits(limits: JobLimits) -> None:
    """Worker initializer: runs in the new process before any job."""
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(limits.threads)
    if limits.memory_mib is not None:
        size = limits.memory_mib * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    import torch  # after the thread variables, so OpenMP reads them

    torch.set_num_threads(limits.threads)


class IsolatedRunner:
    """Runs functions in spawned worker processes under :class:`JobLimits`.

    Every job gets a fresh worker process: nothing one uploader's model allocated or
    left behind (allocator arenas after a failed allocation, globals) reaches the next
    job. The pool starts on first use and spawns the next worker as soon as a job ends,
    so the start (importing torch: one to three seconds) overlaps the wait for the next job.

    Args:
        limits: What each job may use.
        workers: Worker processes, hence jobs run at once.
        name: What the jobs are, for error messages ("verification").

    Example:
        >>> runner = IsolatedRunner(limits=JobLimits(memory_mib=None, seconds=60), name="example")
        >>> runner.run(pow, 2, 10)
        1024
        >>> runner.close()
    """

    def __init__(self, *, limits: JobLimits, workers: int = 1, name: str = "job") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.limits = limits
        self.workers = workers
        self.name = name
        self._pool: ProcessPool | None = None
        self._closed = False
        self._lock = threading.Lock()

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """Call ``function(*args)`` in a fresh worker process and return its result.

        ``function``, its arguments and its result are pickled: module-level functions
        and plain data (bytes, NumPy arrays, dicts); never tensors or modules, which
        torch shares through the worker process, gone once the job ends.

        Raises:
            JobLimitError: The job ran past ``limits.seconds``, ran out of its memory
                limit, or its process died or could not start (the message says which).
            RunnerClosedError: :meth:`close` was called (the server is stopping).
            Exception: Whatever ``function`` raised, re-raised here.
        """
        pool = self._ensure_pool()
        try:
            future = pool.schedule(function, args=args, timeout=self.limits.seconds)
            return future.result()
        except TimeoutError as exc:
            if exc.args[:1] != ("Task timeout",):  # pebble's; the job's own TimeoutError is its error
                raise
            raise JobLimitError(f"the {self.name} ran past its limit of {self.limits.seconds:g} s") from None
        except MemoryError as exc:
            raise JobLimitError(
                f"the {self.name} needed more than its memory limit of {self.limits.memory_mib} MiB ({exc})"
            ) from None
        except ProcessExpired as exc:
            raise JobLimitError(
                f"the {self.name}'s process died (exit code {exc.exitcode}); with a memory limit of "
                f"{self.limits.memory_mib} MiB"
            ) from None
        except (BrokenProcessPool, CancelledError, RuntimeError) as exc:
            # The pool broke (a worker that could not start or that died while idle, a
            # result that did not come back) or was stopped: a new pool for the next job.
            if self._closed:
                raise RunnerClosedError(f"the {self.name} was stopped: the server is shutting down") from None
            if type(exc) is RuntimeError and "Pool" not in str(exc):
                raise  # the job's own RuntimeError
            self._discard(pool)
            raise JobLimitError(f"the {self.name}'s worker process failed ({type(exc).__name__}: {exc})") from None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the worker processes (a running job ends with :class:`RunnerClosedError`); later runs refuse."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join()

    def _discard(self, pool: ProcessPool) -> None:
        with self._lock:
            if self._pool is not pool:
                return  # another job replaced it already
            self._pool = None
        pool.stop()
        pool.join()

    def _ensure_pool(self) -> ProcessPool:
        with self._lock:
            if self._closed:
                raise RunnerClosedError(f"the {self.name} was stopped: the server is shutting down")
            if self._pool is None:
                self._pool = ProcessPool(
                    max_workers=self.workers,
                    max_tasks=1,
                    initializer=_apply_limits,
                    initargs=(self.limits,),
                    context=multiprocessing.get_context("spawn"),
                )
            return self._pool
