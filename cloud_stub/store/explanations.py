"""Explanations uploaded with predictions: attribution maps kept per upload batch, like features."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import numpy as np
from sqlalchemy import select

from cloud_stub.store._base import StorePart
from cloud_stub.store.rows import ExplanationSummary, SampleUpload
from cloud_stub.store.samples import add_batch, batch_summary, load_batches
from cloud_stub.store.schema import explanation_batches
from edge_sdk.client.payloads import MAPS_KEY, PREDICTED_KEY, PROBABILITIES_KEY, encode_tensors

__all__ = ["ExplanationStore"]


class ExplanationStore(StorePart):
    """The ``explanation_batches`` table."""

    def add_explanations(
        self,
        dataset: str,
        maps: np.ndarray,
        predicted: np.ndarray,
        *,
        probabilities: np.ndarray | None,
        method: str,
        api_key_id: int,
        idempotency_key: str | None,
    ) -> SampleUpload:
        """Store one batch of maps ``(B, H, W)`` with the predicted classes ``(B,)`` they explain.

        Raises:
            ConflictError: The idempotency key was used before for different data.
        """
        tensors = {MAPS_KEY: maps, PREDICTED_KEY: predicted}
        if probabilities is not None:
            tensors[PROBABILITIES_KEY] = probabilities
        return add_batch(
            self.engine,
            explanation_batches,
            dataset,
            encode_tensors(tensors),
            predicted,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            method=method,
        )

    def explanation_summary(self, dataset: str) -> ExplanationSummary:
        """Maps, batches, predicted-class counts and maps per method of ``dataset``.

        Raises:
            NotFoundError: No explanations were uploaded under this name.
        """
        summary = batch_summary(self.engine, explanation_batches, dataset, what="explanations")
        table = explanation_batches
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.c.method, table.c.samples).where(table.c.dataset == dataset)).all()
        methods: Counter[str] = Counter()
        for row in rows:
            methods[row.method] += int(row.samples)
        return ExplanationSummary(**asdict(summary), methods=dict(sorted(methods.items())))

    def load_explanations(self, dataset: str) -> dict[str, np.ndarray]:
        """Every map, predicted class, method and (where sent) probability row of ``dataset``, in upload order.

        ``method`` holds each map's method; ``probabilities`` is present only when every
        batch carried it.

        Raises:
            NotFoundError: No explanations were uploaded under this name.
        """
        decoded = load_batches(self.engine, explanation_batches, dataset, what="explanations")
        table = explanation_batches
        with self.engine.connect() as conn:
            methods = conn.execute(
                select(table.c.method).where(table.c.dataset == dataset).order_by(table.c.id)
            ).scalars()
            per_map = [method for method, d in zip(methods, decoded, strict=True) for _ in d[PREDICTED_KEY]]
        loaded = {key: np.concatenate([d[key] for d in decoded]) for key in (MAPS_KEY, PREDICTED_KEY)}
        loaded["method"] = np.array(per_map, dtype=np.str_)
        if all(PROBABILITIES_KEY in d for d in decoded):
            loaded[PROBABILITIES_KEY] = np.concatenate([d[PROBABILITIES_KEY] for d in decoded])
        return loaded
