"""Head-training jobs: queued, claimed by one worker, finished; restarted a bounded number of times."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import func, insert, select, update

from cloud_stub.errors import NotFoundError
from cloud_stub.store._base import StorePart, record
from cloud_stub.store.rows import JobRow
from cloud_stub.store.schema import training_jobs

__all__ = ["JOB_STATUSES", "MAX_ATTEMPTS", "JobStore"]

JOB_STATUSES = ("queued", "running", "succeeded", "failed")
# A job or verification that was running when the service stopped is started again
# at the next start, at most this many times in all: one that brings the server down
# every time (memory, a crash in a native library) must not do so forever.
MAX_ATTEMPTS = 3


class JobStore(StorePart):
    """The ``training_jobs`` table."""

    def create_job(self, dataset: str, params: dict[str, Any], *, api_key_id: int | None = None) -> int:
        """Queue a head-training job, owned by the key that asked for it."""
        values = {"dataset": dataset, "status": "queued", "params": json.dumps(params), "created_at": time.time()}
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(training_jobs).values(**values, api_key_id=api_key_id).returning(training_jobs.c.id)
                ).scalar_one()
            )

    def pending_jobs(self, api_key_id: int) -> int:
        """Training jobs of a key that are queued or running."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(training_jobs)
                    .where(training_jobs.c.api_key_id == api_key_id, training_jobs.c.status.in_(("queued", "running")))
                ).scalar_one()
            )

    def job(self, job_id: int) -> JobRow:
        """A job's record.

        Raises:
            NotFoundError: No such job.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(training_jobs).where(training_jobs.c.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"no training job {job_id}")
        return record(JobRow, row, params=json.loads(row.params))

    def update_job(self, job_id: int, **values: Any) -> None:
        """Set fields of a job (status, error, head_id, timestamps)."""
        if "status" in values and values["status"] not in JOB_STATUSES:
            raise ValueError(f"unknown job status {values['status']!r}")
        with self.engine.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(**values))

    def claim_job(self, job_id: int) -> bool:
        """Mark a queued job running and count the attempt; ``False`` if another worker claimed it first."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(training_jobs)
                .where(training_jobs.c.id == job_id, training_jobs.c.status == "queued")
                .values(status="running", started_at=time.time(), attempts=training_jobs.c.attempts + 1)
            ).rowcount
        return bool(claimed)

    def unfinished_jobs(self) -> list[int]:
        """Jobs to run again after a restart, oldest first, requeued.

        A job that was running for the :data:`MAX_ATTEMPTS`-th time when the service
        stopped is marked failed instead, with the reason.
        """
        with self.engine.begin() as conn:
            conn.execute(
                update(training_jobs)
                .where(training_jobs.c.status == "running", training_jobs.c.attempts >= MAX_ATTEMPTS)
                .values(
                    status="failed",
                    finished_at=time.time(),
                    error=f"the service stopped while this job ran, {MAX_ATTEMPTS} times; not started again",
                )
            )
            conn.execute(
                update(training_jobs)
                .where(training_jobs.c.status == "running")
                .values(status="queued", started_at=None)
            )
            ids = conn.execute(
                select(training_jobs.c.id).where(training_jobs.c.status == "queued").order_by(training_jobs.c.id)
            ).scalars()
            return [int(i) for i in ids]
