"""Background work of the service: training heads and verifying uploaded models, one at a time.

One worker thread; the work itself is recorded in the store, so what was queued or
running when the server stopped is picked up at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Literal

import torch

from cloud_stub.heads import ServedHead, fit_head, head_to_bytes
from cloud_stub.store import Store
from edge_sdk.kit.models import Architecture

__all__ = ["BackgroundWorker"]

JobKind = Literal["train", "verify"]

_log = logging.getLogger(__name__)


class BackgroundWorker:
    """Runs head-training jobs and model verifications one at a time, in submission order.

    Jobs live in the store, so a job queued or running when the server stopped is
    run again at the next start (training is seeded, so the result is the same), and
    an upload still ``unverified`` is verified then.
    """

    def __init__(
        self,
        store: Store,
        *,
        arch: Architecture,
        served: ServedHead,
        threads: int = 1,
        verify_uploads: bool = True,
        verify_budget: str = "standard",
    ) -> None:
        self.store = store
        self.verify_uploads = verify_uploads
        self.verify_budget = verify_budget
        self.arch = arch
        self.served = served
        self.threads = threads
        self._queue: queue.Queue[tuple[JobKind, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

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

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running job (if any) and stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        while (item := self._queue.get()) is not None:
            kind, ident = item
            if kind == "train":
                self._train(ident)
            else:
                self._verify(ident)

    def _verify(self, model_id: int) -> None:
        from cloud_stub.uploads import upload_task
        from cloud_stub.verification.verify import verify_onnx  # torch-heavy; loaded on first use

        if not self.store.claim_model(model_id):
            return  # verified already, or another replica has it
        record = self.store.model(model_id)
        try:
            task = upload_task(record.task, self.store)
            report = verify_onnx(self.store.model_onnx(model_id), task=task, budget=self.verify_budget)
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
            fit = fit_head(
                features,
                labels,
                arch=self.arch,
                epochs=params["epochs"],
                seed=params["seed"],
                validation_fraction=params["validation_fraction"],
            )
            head_id = self.store.add_head(
                head_to_bytes(fit.head),
                source="trained",
                dataset=job.dataset,
                val_accuracy=fit.val_accuracy,
                train_samples=fit.train_samples,
                val_samples=fit.val_samples,
                job_id=job_id,
                activate=params["activate"],
            )
        except Exception as exc:  # a failed job is recorded, never kills the worker
            _log.exception("training job %s failed", job_id)
            self.store.update_job(
                job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time()
            )
            return
        if params["activate"]:
            self.served.swap(fit.head, head_id)
        self.store.update_job(
            job_id, status="succeeded", head_id=head_id, val_accuracy=fit.val_accuracy, finished_at=time.time()
        )
