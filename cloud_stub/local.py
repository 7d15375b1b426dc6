"""Run the cloud stub in a child process on a free loopback port (tests, benchmarks, examples)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["free_port", "local_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_server(
    database_url: str, *, log: str | Path, extra_args: tuple[str, ...] = (), startup_timeout: float = 90.0
) -> Iterator[str]:
    """Start ``edge-cloud serve`` in a child process; yield its base URL; stop it on exit.

    Args:
        database_url: The service's database.
        log: File that receives the server's output (appended).
        extra_args: More ``edge-cloud serve`` flags (``--kit``, ``--max-batch`` ...).
        startup_timeout: Seconds to wait for ``/health`` to answer.

    Raises:
        RuntimeError: The server exited or did not answer in time (with its log's tail).
    """
    log = Path(log)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "cloud_stub",
        "serve",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--log-level",
        "warning",
        *extra_args,
    ]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {startup_timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
