"""Background work of the service: training heads and verifying uploaded models, one at a time.

One worker thread hands each job to a worker process under limits
(:mod:`cloud_stub.isolation`); the work itself is recorded in the store, so what was
queued or running when the server stopped is picked up at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cloud_stub.errors import CloudStubError
from cloud_stub.heads import ServedHead, fit_head, head_from_bytes, head_to_bytes
from cloud_stub.isolation import IsolatedRunner, JobLimits, RunnerClosedError
from cloud_stub.store import Store
from cloud_stub.uploads import UploadTask, check_upload_job
from edge_sdk.kit.models import Architecture

if TYPE_CHECKING:
    from cloud_stub.verification.detector import DetectorConfig

__all__ = ["BackgroundWorker", "ServerBusyError"]

JobKind = Literal["train", "verify"]

_log = logging.getLogger(__name__)


CHECK_RETRY_AFTER = 10  # seconds a refused upload is asked to wait; a check takes 1-3 s, at most --check-seconds


class ServerBusyError(CloudStubError):
    """Too many uploads are being checked at once; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


DEFAULT_JOB_LIMITS = JobLimits(memory_mib=4096, seconds=3600.0)
DEFAULT_CHECK_LIMITS = JobLimits(memory_mib=4096, seconds=120.0)


def verify_job(
    data: bytes,
    task: UploadTask,
    budget: str,
    config: DetectorConfig | None,
    threads: int,
    reference_cache: Path | None = None,
) -> dict[str, Any]:
    """Verify an upload; what the worker runs in its worker process."""
    from cloud_stub.verification.verify import verify_onnx  # torch-heavy; loaded on first use

    return verify_onnx(
        data, task=task.resolve(), budget=budget, config=config, threads=threads, reference_cache=reference_cache
    )


def train_job(features: np.ndarray, labels: np.ndarray, arch: Architecture, params: dict[str, Any]) -> dict[str, Any]:
    """Train a head on a stored dataset; what the worker runs in its worker process.

    Returns plain data (the head's state as bytes, its figures): a module or tensor
    would come back through the worker process, which ends with the job.
    """
    fit = fit_head(
        features,
        labels,
        arch=arch,
        epochs=params["epochs"],
        seed=params["seed"],
        validation_fraction=params["validation_fraction"],
    )
    return {
        "head": head_to_bytes(fit.head),
        "val_accuracy": fit.val_accuracy,
        "train_samples": fit.train_samples,
        "val_samples": fit.val_samples,
    }


class BackgroundWorker:
    """Runs head-training jobs and model verifications one at a time, in submission order.

    Each job runs in a worker process under ``job_limits``; one that breaks a limit
    ends ``failed`` with the reason, and the server goes on serving. Upload checks run
    in another worker process under ``check_limits``, so an upload never waits for a
    verification. Jobs live in the store, so a job queued or running when the server
    stopped is run again at the next start, within its bounded attempts (training is
    seeded, so the result is the same), and an upload still ``unverified`` is verified then.

    Args:
        store: Where jobs, uploads and their results live.
        arch: Head architecture of the kit, for training.
        served: The served head, swapped when a trained head is activated.
        verify_uploads: Verify uploads (else they stay ``unverified``).
        verify_budget: Detector budget (``standard`` or ``quick``) for built-in tasks.
        verify_config: Detector settings for every verification instead of the budget's.
        reference_cache: Folder where the verifier keeps a built-in task's reference
            probe, so that each job (a fresh process) does not train it again; ``None``
            trains it in every job.
        job_limits: Limits of each verification and training job.
        check_limits: Limits of each upload check.
        checks_waiting: Upload checks and dataset readings that may run or wait at once;
            more get :class:`ServerBusyError` at once rather than holding a request
            thread for minutes.
    """

    def __init__(
        self,
        store: Store,
        *,
        arch: Architecture,
        served: ServedHead,
        verify_uploads: bool = True,
        verify_budget: str = "standard",
        verify_config: DetectorConfig | None = None,
        reference_cache: Path | None = None,
        job_limits: JobLimits = DEFAULT_JOB_LIMITS,
        check_limits: JobLimits = DEFAULT_CHECK_LIMITS,
        checks_waiting: int = 4,
    ) -> None:
        self.store = store
        self.verify_uploads = verify_uploads
        self.verify_budget = verify_budget
        self.verify_config = verify_config
        self.reference_cache = reference_cache
        self.arch = arch
        self.served = served
        self.jobs = IsolatedRunner(limits=job_limits, name="job")
        self.checks = IsolatedRunner(limits=check_limits, name="upload check")
        self._queue: queue.Queue[tuple[JobKind, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.checks_waiting = checks_waiting
        self._check_slots = threading.BoundedSemaphore(checks_waiting)

    def start(self) -> None:
        """Start the worker and queue the jobs a previous run left unfinished."""
        for job_id in self.store.unfinished_jobs():  # requeued by the store, within their attempts
            self._queue.put(("train", job_id))
        if self.verify_uploads:
            for model_id in self.store.models_to_verify():
                self._queue.put(("verify", model_id))
        self._thread = threading.Thread(target=self._loop, name="cloud-worker", daemon=True)
        self._thread.start()

    def submit(self, job_id: int) -> None:
        """Queue a head-training job already recorded in the store."""
        self._queue.put(("train", job_id))

    def submit_verification(self, model_id: int) -> None:
        """Queue the verification of an uploaded model."""
        self._queue.put(("verify", model_id))

    def check_upload(self, data: bytes, task: UploadTask) -> dict[str, Any]:
        """Run the upload check (:func:`cloud_stub.uploads.check_onnx_model`) in the check process.

        Raises:
            ModelRejectedError: As the check.
            JobLimitError: The check broke its limits (the model asks for too much).
            ServerBusyError: ``checks_waiting`` checks are running or waiting already.
        """
        return self._checked(check_upload_job, data, task, 1)

    def describe_dataset(self, data: bytes, name: str) -> dict[str, Any]:
        """Read an uploaded verification dataset in the check process and describe its task.

        Raises:
            OperatorDataError: Not a dataset the verifier can use (the reason says why).
            JobLimitError: Reading it broke the check's limits.
            ServerBusyError: ``checks_waiting`` checks are running or waiting already.
        """
        from cloud_stub.verification.operator_data import dataset_summary_job

        return self._checked(dataset_summary_job, data, name)

    def _checked(self, function: Any, *args: Any) -> Any:
        if not self._check_slots.acquire(blocking=False):
            raise ServerBusyError(
                f"{self.checks_waiting} uploads are being checked; retry after {CHECK_RETRY_AFTER} s",
                retry_after=CHECK_RETRY_AFTER,
            )
        try:
            return self.checks.run(function, *args)
        finally:
            self._check_slots.release()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the queued jobs run for up to ``timeout`` s, then end the worker processes.

        A job still running then is ended and stays recorded as running (``verifying``
        for a model), and jobs not started stay queued: the next start resumes them,
        within their bounded attempts.
        """
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self.checks.close()
        self.jobs.close()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None and not self.jobs.closed:
            kind, ident = item
            if kind == "train":
                self._train(ident)
            else:
                self._verify(ident)

    def _verify(self, model_id: int) -> None:
        if not self.store.claim_model(model_id):
            return  # verified already, or another replica has it
        record = self.store.model(model_id)
        try:
            task = UploadTask.from_store(record.task, self.store)
            data = self.store.model_onnx(model_id)
            threads = self.jobs.limits.threads
            report = self.jobs.run(
                verify_job, data, task, self.verify_budget, self.verify_config, threads, self.reference_cache
            )
        except RunnerClosedError:
            return  # the server is stopping: the model stays 'verifying' and is verified at the next start
        except Exception as exc:  # recorded on the model, never kills the worker
            _log.exception("verification of model %s failed", model_id)
            self.store.set_model_report(model_id, status="failed", report={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.store.set_model_report(model_id, status="verified", report=report)

    def _train(self, job_id: int) -> None:
        if not self.store.claim_job(job_id):
            return  # another replica runs it
        job = self.store.job(job_id)
        params = job.params
        try:
            features, labels = self.store.load_dataset(job.dataset)
            fit = self.jobs.run(train_job, features, labels, self.arch, params)
            head_id = self.store.add_head(
                fit["head"],
                source="trained",
                dataset=job.dataset,
                val_accuracy=fit["val_accuracy"],
                train_samples=fit["train_samples"],
                val_samples=fit["val_samples"],
                job_id=job_id,
                activate=params["activate"],
            )
        except RunnerClosedError:
            return  # the server is stopping: the job stays running and is resumed at the next start
        except Exception as exc:  # a failed job is recorded, never kills the worker
            _log.exception("training job %s failed", job_id)
            self.store.update_job(
                job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time()
            )
            return
        if params["activate"]:
            self.served.swap(head_from_bytes(fit["head"], self.arch), head_id)
        self.store.update_job(
            job_id, status="succeeded", head_id=head_id, val_accuracy=fit["val_accuracy"], finished_at=time.time()
        )
