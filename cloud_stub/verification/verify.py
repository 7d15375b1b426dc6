"""Verify an uploaded ONNX classifier: the one entry point of the CLI and of the service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cloud_stub.uploads import check_upload
from cloud_stub.verification.detector import DetectorConfig, verify_classifier
from cloud_stub.verification.runtime import OnnxClassifier
from cloud_stub.verification.tasks import MODEL_TASKS, ModelTask, resolve_task

__all__ = ["verify_onnx"]


def verify_onnx(
    data: bytes,
    *,
    task: str | ModelTask,
    config: DetectorConfig | None = None,
    budget: str = "standard",
    threads: int = 1,
    reference_cache: Path | None = None,
) -> dict[str, Any]:
    """Check ONNX bytes, run them in onnxruntime with the conventions found and verify; return the JSON report.

    The outputs the probe and the accuracy read come from onnxruntime; the fine-tune
    signal trains the graph's torch copy when it converts and agrees with onnxruntime,
    and says why not otherwise (``unavailable``).

    Args:
        data: The ONNX file's bytes.
        task: Claimed task: a built-in name or an operator's :class:`ModelTask`.
        config: Detector settings; if omitted ``DetectorConfig.for_task(task, budget=budget)`` for a
            built-in task, ``DetectorConfig.for_data`` for an operator's.
        budget: ``standard`` or ``quick`` when ``config`` is omitted.
        threads: onnxruntime intra-op threads.
        reference_cache: Folder where a built-in task's reference probe is kept between
            processes (see :func:`~cloud_stub.verification.detector.verify_classifier`).

    Raises:
        ModelRejectedError: Not a valid ONNX classifier for the task, or it does not run
            on the task's images (the reason says which).
        TaskDataError: The task's data is not installed.
    """
    start = time.perf_counter()
    spec = resolve_task(task)
    checked = check_upload(data, task=spec, threads=threads)
    if config is None:
        builtin = spec.name in MODEL_TASKS
        config = (
            DetectorConfig.for_task(spec.name, budget=budget)
            if builtin
            else DetectorConfig.for_data(spec.loader(), budget=budget)
        )
    model = OnnxClassifier(data, checked.conventions, threads=threads)
    trainable = checked.copy.module or checked.copy.status
    report = verify_classifier(
        model, task=spec, config=config, trainable=trainable, reference_cache=reference_cache
    ).to_json()
    report["model"] = checked.summary
    report["conventions"] = checked.summary["conventions"]
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report
