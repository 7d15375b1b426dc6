"""What both command lines share (``edge-sdk`` on the device, ``edge-cloud`` on the server).

A typed SDK error becomes one red line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from edge_sdk.errors import EdgeSDKError

__all__ = ["EXIT_BAD_INPUT", "handle_errors"]

EXIT_BAD_INPUT = 2
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """Turn the SDK's typed errors into one red line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EdgeSDKError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from exc

    return wrapper  # type: ignore[return-value]
