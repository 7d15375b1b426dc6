"""Fuzz the reader of operators' verification datasets (.npz of images and labels)."""

from __future__ import annotations

import sys

import atheris

# The project, and the Python code that parses what it is sent (numpy's .npy header, zip,
# safetensors' wrapper, onnx's helpers); not torch, which would take minutes to instrument.
INSTRUMENTED = ["edge_sdk", "cloud_stub", "safetensors", "numpy.lib", "zipfile", "onnx", "tokenize", "ast"]

with atheris.instrument_imports(include=INSTRUMENTED):
    from cloud_stub.verification.operator_data import OperatorDataError, operator_task, read_npz


def test_one_input(data: bytes) -> None:
    try:
        images, labels = read_npz(data, what="the fuzzed dataset")
        operator_task(images, labels, source="fuzz").loader()
    except OperatorDataError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
