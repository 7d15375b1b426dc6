"""Verify an uploaded ONNX classifier: the one entry point of the CLI and of the service."""

from __future__ import annotations

import time
from typing import Any

from cloud_stub.uploads import check_onnx_model
from cloud_stub.verification.detector import DetectorConfig, verify_classifier
from cloud_stub.verification.onnx_torch import onnx_to_torch

__all__ = ["verify_onnx"]


def verify_onnx(
    data: bytes, *, task: str, config: DetectorConfig | None = None, budget: str = "standard"
) -> dict[str, Any]:
    """Check, convert and verify ONNX bytes; return the JSON report.

    Args:
        data: The ONNX file's bytes.
        task: Claimed task.
        config: Detector settings; ``DetectorConfig.for_task(task, budget=budget)`` if omitted.
        budget: ``standard`` or ``quick`` when ``config`` is omitted.

    Raises:
        ModelRejectedError: Not a valid ONNX classifier for the task.
        UnsupportedOnnxError: It uses operators the converter does not run.
        TaskDataError: The task's data is not installed.
    """
    start = time.perf_counter()
    summary = check_onnx_model(data, task=task)
    config = config or DetectorConfig.for_task(task, budget=budget)
    report = verify_classifier(onnx_to_torch(data), task=task, config=config).to_json()
    report["model"] = summary
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report
