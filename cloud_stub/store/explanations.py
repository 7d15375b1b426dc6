"""Explanations uploaded with predictions: attribution maps kept per upload batch, like features."""

from __future__ import annotations

import numpy as np

from cloud_stub.store._base import StorePart
from cloud_stub.store.rows import DatasetSummary, SampleUpload
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

    def explanation_summary(self, dataset: str) -> DatasetSummary:
        """Maps, batches and predicted-class counts of ``dataset``.

        Raises:
            NotFoundError: No explanations were uploaded under this name.
        """
        return batch_summary(self.engine, explanation_batches, dataset, what="explanations")

    def load_explanations(self, dataset: str) -> dict[str, np.ndarray]:
        """Every map, predicted class and (where sent) probability row of ``dataset``, in upload order.

        ``probabilities`` is present only when every batch carried it.

        Raises:
            NotFoundError: No explanations were uploaded under this name.
        """
        decoded = load_batches(self.engine, explanation_batches, dataset, what="explanations")
        loaded = {key: np.concatenate([d[key] for d in decoded]) for key in (MAPS_KEY, PREDICTED_KEY)}
        if all(PROBABILITIES_KEY in d for d in decoded):
            loaded[PROBABILITIES_KEY] = np.concatenate([d[PROBABILITIES_KEY] for d in decoded])
        return loaded
