"""Fuzz the feature payload decoders the service runs on every /v1/predict and samples body."""

from __future__ import annotations

import sys

import atheris

# The project, and the Python code that parses what it is sent (numpy's .npy header, zip,
# safetensors' wrapper, onnx's helpers); not torch, which would take minutes to instrument.
INSTRUMENTED = ["edge_sdk", "cloud_stub", "safetensors", "numpy.lib", "zipfile", "onnx", "tokenize", "ast"]

with atheris.instrument_imports(include=INSTRUMENTED):
    from edge_sdk.client.payloads import (
        FEATURES_KEY,
        LABELS_KEY,
        PayloadFormatError,
        check_features,
        check_labels,
        decode_tensors,
    )
    from edge_sdk.errors import NonFiniteError, TensorShapeError

EXPECTED = (PayloadFormatError, TensorShapeError, NonFiniteError)
FEATURE_SHAPE = (4, 4, 4)


def test_one_input(data: bytes) -> None:
    try:
        tensors = decode_tensors(data)
        features = check_features(tensors[FEATURES_KEY], FEATURE_SHAPE, max_batch=256)
        if LABELS_KEY in tensors:
            check_labels(tensors[LABELS_KEY], batch=len(features), num_classes=3)
    except EXPECTED:
        return
    except KeyError:
        return  # a valid payload without features: the service answers 400 "missing 'features'"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
