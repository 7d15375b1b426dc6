"""Fuzz the check every uploaded model goes through before it is accepted (on the orl-pose task)."""

from __future__ import annotations

import sys

import atheris

# The project, and the Python code that parses what it is sent (numpy's .npy header, zip,
# safetensors' wrapper, onnx's helpers); not torch, which would take minutes to instrument.
INSTRUMENTED = ["edge_sdk", "cloud_stub", "safetensors", "numpy.lib", "zipfile", "onnx", "tokenize", "ast"]

with atheris.instrument_imports(include=INSTRUMENTED):
    from cloud_stub.errors import ModelRejectedError
    from cloud_stub.uploads import check_onnx_model
    from cloud_stub.verification.tasks import resolve_task

TASK = resolve_task("orl-pose")


def test_one_input(data: bytes) -> None:
    try:
        check_onnx_model(data, task=TASK)
    except ModelRejectedError:
        return
    except MemoryError:
        return  # in the service the check runs under RLIMIT_AS; this is its 422


if __name__ == "__main__":
    TASK.loader()  # load the task's images once, outside the timed runs
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
