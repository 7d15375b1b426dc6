"""The ``edge-sdk`` command line: one module per command, assembled in :mod:`edge_sdk.cli.root`."""

from edge_sdk.cli.root import app, main

__all__ = ["app", "main"]
