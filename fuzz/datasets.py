"""Fuzz the reader of operators' verification datasets (.npz of images and labels)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
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
