"""onnxruntime sessions for the device: CPU provider, no busy-waiting threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["cpu_session"]


def cpu_session(model: str | Path | bytes, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session whose threads do not busy-wait between calls.

    onnxruntime's threads spin after each run by default; on a small device the
    encoder shares the cores with crafting in torch, which must not wait for them.

    Args:
        model: Path of an ``.onnx`` file, or its bytes.
        threads: Intra-op thread count (``None``: onnxruntime's default).

    Returns:
        An ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
