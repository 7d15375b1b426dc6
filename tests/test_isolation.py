"""Jobs run in spawned worker processes under memory, time and thread limits (cloud_stub.isolation)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import torch

from cloud_helpers import linear_classifier_onnx
from cloud_stub.errors import ModelRejectedError
from cloud_stub.isolation import IsolatedRunner, JobLimitError, JobLimits, RunnerClosedError
from cloud_stub.uploads import UploadTask, check_upload_job


@pytest.fixture(scope="module")
def runner() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(limits=JobLimits(memory_mib=1536, seconds=20, threads=1), name="test job")
    yield runner
    runner.close()


def test_a_job_runs_in_another_process_and_its_errors_come_back_typed(runner: IsolatedRunner) -> None:
    assert runner.run(os.getpid) != os.getpid()
    summary = runner.run(check_upload_job, linear_classifier_onnx((1, 64, 64), 3), UploadTask("orl-pose"), 1)
    assert summary["operators"] == ["Flatten", "Gemm"]
    with pytest.raises(ModelRejectedError, match="not an ONNX model"):
        runner.run(check_upload_job, b"not onnx", UploadTask("orl-pose"), 1)


def test_the_worker_has_the_limits(runner: IsolatedRunner) -> None:
    assert runner.run(os.getenv, "OMP_NUM_THREADS") == "1" and runner.run(torch.get_num_threads) == 1
    with pytest.raises(JobLimitError, match="memory limit of 1536 MiB"):
        runner.run(bytearray, 2 << 30)  # 2 GiB: over the limit, refused before it is touched
    assert runner.run(len, bytearray(1 << 20)) == 1 << 20


def test_a_job_past_its_time_is_ended_and_its_worker_replaced(runner: IsolatedRunner) -> None:
    quick = IsolatedRunner(limits=JobLimits(memory_mib=None, seconds=1.0), name="slow job")
    try:
        first = quick.run(os.getpid)
        started = time.perf_counter()
        with pytest.raises(JobLimitError, match="slow job ran past its limit of 1 s"):
            quick.run(time.sleep, 30)
        assert time.perf_counter() - started < 10
        assert quick.run(os.getpid) != first  # a new worker process
    finally:
        quick.close()


def test_a_worker_that_dies_is_reported_and_replaced(runner: IsolatedRunner) -> None:
    with pytest.raises(JobLimitError, match=r"process died \(exit code 7\)"):
        runner.run(os._exit, 7)
    assert runner.run(abs, -3) == 3


def test_limits_are_validated() -> None:
    for bad in ({"memory_mib": 10}, {"seconds": 0}, {"threads": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            JobLimits(**{"memory_mib": None, "seconds": 1.0, **bad})  # type: ignore[arg-type]


def test_an_error_the_upload_check_did_not_foresee_refuses_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.protobuf.message import EncodeError

    import cloud_stub.uploads as uploads

    def failing(data: bytes, **_: object) -> None:
        raise EncodeError("Failed to serialize proto")

    monkeypatch.setattr(uploads, "check_onnx_model", failing)
    with pytest.raises(ModelRejectedError, match="the upload check failed on this model: EncodeError: Failed to"):
        uploads.check_upload_job(b"", UploadTask("orl-pose"))


def test_every_job_gets_a_fresh_worker_process(runner: IsolatedRunner) -> None:
    first, second = runner.run(os.getpid), runner.run(os.getpid)
    assert first != second


def test_a_result_that_cannot_come_back_is_an_error_and_the_next_job_runs() -> None:
    # torch shares a tensor's storage through the worker process, which is gone once the job
    # ends: the pool either sees the transfer fail, or waits for it until the job's limit,
    # depending on whether the worker has exited when the result is read. Either is an error.
    runner = IsolatedRunner(limits=JobLimits(memory_mib=1536, seconds=12, threads=1), name="test job")
    try:
        with pytest.raises(JobLimitError, match=r"worker process failed|ran past its limit of 12 s"):
            runner.run(torch.zeros, 3)
        assert runner.run(abs, -1) == 1
    finally:
        runner.close()


def test_a_closed_runner_refuses_jobs() -> None:
    closed = IsolatedRunner(limits=JobLimits(memory_mib=None, seconds=5), name="late job")
    closed.close()
    assert closed.closed
    with pytest.raises(RunnerClosedError, match="shutting down"):
        closed.run(abs, -1)
