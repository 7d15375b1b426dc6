"""HTTP client of the cloud stub, for apps on the device and for the CLI.

Retries what is safe to retry (connection failures, timeouts, 429/502/503/504) with
exponential backoff, waiting as long as a ``Retry-After`` header asks, and sends an
``Idempotency-Key`` with every upload so that a retried upload whose first attempt
did reach the server is stored once, not twice.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from edge_sdk.client.payloads import (
    FEATURES_KEY,
    LABELS_KEY,
    MAPS_KEY,
    PREDICTED_KEY,
    PROBABILITIES_KEY,
    encode_tensors,
)
from edge_sdk.errors import CloudRequestError, CloudUnavailableError, NonFiniteError, TensorShapeError

__all__ = ["API_KEY_HEADER", "CloudClient", "Prediction"]

API_KEY_HEADER = "X-API-Key"
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_OCTET = {"Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class Prediction:
    """The head's answer for a batch of crafted features.

    Attributes:
        labels: ``(B,)`` predicted class per feature.
        probabilities: ``(B, classes)`` softmax outputs.
        head_id: Which head answered (heads change when a new one is trained).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    head_id: int


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (RFC 9110: seconds or an HTTP date); ``None`` without one."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _as_array(batch: torch.Tensor | np.ndarray, name: str = "features") -> np.ndarray:
    array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
    if array.dtype != np.float32:
        if not np.issubdtype(array.dtype, np.floating):
            raise TensorShapeError(f"{name} must be floating point, got {array.dtype}")
        array = array.astype(np.float32)
    if array.ndim < 2:
        raise TensorShapeError(f"{name} must be a batch (B, ...), got shape {array.shape}")
    if not np.isfinite(array).all():
        # Checked here too so that a NaN never leaves the device, not only to save a round trip.
        raise NonFiniteError(f"{name} hold NaN or infinite values; refusing to upload them")
    return np.ascontiguousarray(array)


def _as_labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise TensorShapeError(f"class labels must be integers, got {array.dtype}")
    return array.astype(np.int64)


class CloudClient:
    """Talk to a running cloud stub.

    Args:
        base_url: Service root, e.g. ``http://127.0.0.1:8000``.
        api_key: Key issued by ``edge-cloud keys create``.
        timeout: Seconds per attempt (connect, read and write each).
        retries: Further attempts after the first on retryable failures.
        backoff: First wait in seconds between attempts; doubles each time. A
            ``Retry-After`` header (seconds or an HTTP date) replaces it when longer.
        max_retry_after: Longest ``Retry-After`` wait, in seconds, the client accepts; a
            server asking for more gets the request refused at once, with its answer.
        transport: An ``httpx`` transport, for tests that serve the app in-process.

    Example:
        >>> client = CloudClient("http://127.0.0.1:9", api_key="k", timeout=0.2, retries=0)
        >>> client.health()
        Traceback (most recent call last):
        ...
        edge_sdk.errors.CloudUnavailableError: cannot reach http://127.0.0.1:9/health after 1 attempt(s): ...
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={API_KEY_HEADER: api_key}, transport=transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        attempts = self.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            wait = self.backoff * 2**attempt
            try:
                response = self._http.request(method, path, content=content, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    detail = str(exc) or type(exc).__name__
                    raise CloudUnavailableError(
                        f"cannot reach {self.base_url}{path} after {attempts} attempt(s): {detail}"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response.json()
                asked = _retry_after(response)
                if response.status_code not in _RETRY_STATUS or last or (asked or 0) > self.max_retry_after:
                    raise CloudRequestError(
                        f"{method} {path} refused with {response.status_code}: {_detail(response)}",
                        status_code=response.status_code,
                    )
                wait = max(wait, asked or 0.0)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def health(self) -> dict[str, Any]:
        """The service's health record (no key needed)."""
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def version(self) -> dict[str, Any]:
        """Service version, kit and active head."""
        result: dict[str, Any] = self._request("GET", "/v1/version")
        return result

    def predict(self, features: torch.Tensor | np.ndarray) -> Prediction:
        """Run the cloud's head on a batch of crafted features."""
        body = encode_tensors({FEATURES_KEY: _as_array(features)})
        result = self._request("POST", "/v1/predict", content=body, headers=_OCTET)
        return Prediction(
            labels=np.asarray(result["labels"], dtype=np.int64),
            probabilities=np.asarray(result["probabilities"], dtype=np.float32),
            head_id=int(result["head_id"]),
        )

    def upload_samples(
        self,
        dataset: str,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store labelled crafted features in ``dataset`` for training a new head.

        Args:
            dataset: Dataset name (letters, digits, ``_.-``).
            features: ``(B, *feature_shape)`` crafted features.
            labels: ``(B,)`` class labels.
            idempotency_key: Identifies this upload; the default is a hash of the
                dataset and the bytes, so sending the same batch twice stores it once.

        Returns:
            The server's record: samples added and the dataset's new total.
        """
        body = encode_tensors({FEATURES_KEY: _as_array(features), LABELS_KEY: _as_labels(labels)})
        key = idempotency_key or hashlib.sha256(dataset.encode() + b"\0" + body).hexdigest()
        result: dict[str, Any] = self._request(
            "POST", f"/v1/datasets/{dataset}/samples", content=body, headers={**_OCTET, "Idempotency-Key": key}
        )
        return result

    def upload_explanations(
        self,
        dataset: str,
        maps: torch.Tensor | np.ndarray,
        predicted: torch.Tensor | np.ndarray,
        *,
        method: str,
        probabilities: torch.Tensor | np.ndarray | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store attribution maps with the predictions they explain, for the cloud's audits.

        A map computed on the picture leaks the picture (``docs/explanations.md``):
        noise it on the device first (GNIME) if the cloud should not see faces.

        Args:
            dataset: Dataset name (letters, digits, ``_.-``).
            maps: ``(B, H, W)`` maps in the kit's image frame (:func:`edge_sdk.explanations.explain`).
            predicted: ``(B,)`` the classes the maps explain.
            method: How the maps were made (``grad``, ``grad-cam``, ``integrated-gradients``,
                a defence after ``+``).
            probabilities: ``(B, classes)`` the head's probabilities, if they are sent too.
            idempotency_key: Identifies this upload; the default is a hash of the
                dataset, the method and the bytes.

        Returns:
            The server's record: maps added and the dataset's new total.
        """
        tensors = {MAPS_KEY: _as_array(maps, "maps"), PREDICTED_KEY: _as_labels(predicted)}
        if probabilities is not None:
            tensors[PROBABILITIES_KEY] = _as_array(probabilities, "probabilities")
        body = encode_tensors(tensors)
        key = idempotency_key or hashlib.sha256(f"{dataset}\0{method}\0".encode() + body).hexdigest()
        result: dict[str, Any] = self._request(
            "POST",
            f"/v1/datasets/{dataset}/explanations",
            content=body,
            params={"method": method},
            headers={**_OCTET, "Idempotency-Key": key},
        )
        return result

    def explanations(self, dataset: str) -> dict[str, Any]:
        """Map and predicted-class counts of the explanations uploaded to a dataset."""
        result: dict[str, Any] = self._request("GET", f"/v1/datasets/{dataset}/explanations")
        return result

    def dataset(self, dataset: str) -> dict[str, Any]:
        """Sample and label counts of a collected dataset."""
        result: dict[str, Any] = self._request("GET", f"/v1/datasets/{dataset}")
        return result

    def train_head(
        self, dataset: str, *, epochs: int = 40, seed: int = 0, validation_fraction: float = 0.2, activate: bool = True
    ) -> dict[str, Any]:
        """Queue a training job for a new head on ``dataset``; returns the job record."""
        payload = {
            "dataset": dataset,
            "epochs": epochs,
            "seed": seed,
            "validation_fraction": validation_fraction,
            "activate": activate,
        }
        result: dict[str, Any] = self._request("POST", "/v1/heads", json=payload)
        return result

    def job(self, job_id: int) -> dict[str, Any]:
        """A training job's record (status, validation accuracy, head id)."""
        result: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}")
        return result

    def wait_for_job(self, job_id: int, *, timeout: float = 300.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll a training job until it succeeds or fails.

        Raises:
            CloudRequestError: The job failed (the message is the server's reason).
            CloudUnavailableError: It did not finish within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if record["status"] == "succeeded":
                return record
            if record["status"] == "failed":
                raise CloudRequestError(f"training job {job_id} failed: {record.get('error')}", status_code=200)
            if time.monotonic() > deadline:
                raise CloudUnavailableError(f"training job {job_id} still {record['status']} after {timeout} s")
            time.sleep(poll)

    def upload_model(self, model: str | Path | bytes, *, task: str, name: str | None = None) -> dict[str, Any]:
        """Upload an ONNX classifier for verification; returns its record (status ``unverified``)."""
        if isinstance(model, bytes):
            body, label = model, name or "model.onnx"
        else:
            body, label = Path(model).read_bytes(), name or Path(model).name
        key = hashlib.sha256(task.encode() + b"\0" + label.encode() + b"\0" + body).hexdigest()
        result: dict[str, Any] = self._request(
            "POST",
            "/v1/models",
            content=body,
            params={"task": task, "name": label},
            headers={**_OCTET, "Idempotency-Key": key},
        )
        return result

    def model_report(self, model_id: int) -> dict[str, Any]:
        """An uploaded model's record and verification report."""
        result: dict[str, Any] = self._request("GET", f"/v1/models/{model_id}")
        return result

    @staticmethod
    def new_idempotency_key() -> str:
        """A random key, for uploads that must be stored again even if their bytes repeat."""
        return uuid.uuid4().hex


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]
