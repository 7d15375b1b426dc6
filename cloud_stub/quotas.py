"""Per-key limits: how often a key may call, how many models it may store, how much work it may queue.

One key must not keep the worker busy for everyone, nor fill the model store. Request rates
are counted with `limits <https://limits.readthedocs.io>`_ (moving windows): in memory
per replica by default, or in a shared storage (``redis://HOST``) so that replicas count
together. Stored models and queued work are counted in the store, so they hold across
replicas as they are.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse_many, storage, strategies
from limits.errors import ConfigurationError

from cloud_stub.errors import CloudStubError

if TYPE_CHECKING:
    from cloud_stub.store import Store

__all__ = ["KeyLimiter", "QuotaExceededError", "RateLimitedError", "RateStorageError", "check_storage", "parse_rate"]

PENDING_RETRY_AFTER = 30  # seconds a key over its queued work is asked to wait; a verification takes about 20 s


class RateLimitedError(CloudStubError):
    """A key called too often, or queued too much work; it may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateStorageError(CloudStubError):
    """The storage of request counts (a shared Redis) cannot be reached; the request is not served."""


class QuotaExceededError(CloudStubError):
    """A key stores as many models as it may; waiting does not help."""


def check_storage(uri: str) -> None:
    """Check that ``uri`` names a ``limits`` storage this install can use (without connecting to it).

    Raises:
        ValueError: Unknown scheme, or its client package is not installed.
    """
    scheme = uri.split("://", 1)[0]
    known = sorted(name for name in storage.SCHEMES if not name.startswith("async+"))  # the limiter is synchronous
    if scheme not in known:
        raise ValueError(f"unknown rate-limit storage {uri!r}; known schemes: {', '.join(known)}")
    if scheme == "memory":
        return
    try:
        storage.storage_from_string(uri)  # checks the client package; clients connect on first use
    except ConfigurationError as exc:
        raise ValueError(f"rate-limit storage {uri!r} cannot be used here: {exc}") from exc


def parse_rate(rate: str) -> list[RateLimitItem]:
    """Parse a rate in the ``limits`` notation (``"20/second;1000/minute"``); ``""`` for none.

    Raises:
        ValueError: Not in that notation.
    """
    return parse_many(rate) if rate.strip() else []


class KeyLimiter:
    """Checks a key against its request rate, its stored models and its queued work.

    Args:
        rate: Requests a key may make, in the ``limits`` notation; ``""`` for no limit.
        max_models: Models a key may store.
        max_pending: Training jobs and verifications of a key that may be queued or running at once.
        storage_uri: Where request counts live: ``memory://`` (per replica) or any
            ``limits`` storage URI (``redis://HOST:6379``) shared by replicas.

    Example:
        >>> limiter = KeyLimiter(rate="2/minute", max_models=10, max_pending=2)
        >>> limiter.check_rate(1); limiter.check_rate(1)
        >>> limiter.check_rate(1)
        Traceback (most recent call last):
        ...
        cloud_stub.quotas.RateLimitedError: key 1 is over its rate of 2 per 1 minute; retry after 60 s
    """

    def __init__(self, *, rate: str, max_models: int, max_pending: int, storage_uri: str = "memory://") -> None:
        self.items = parse_rate(rate)
        self.max_models = max_models
        self.max_pending = max_pending
        self._limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))

    def check_rate(self, key_id: int) -> None:
        """Count one request of the key.

        Raises:
            RateLimitedError: The key is over one of its rates.
            RateStorageError: The shared storage of request counts cannot be reached.
        """
        ident = str(key_id)
        for item in self.items:
            if not self._limiter.test(item, "key", ident):
                reset = self._limiter.get_window_stats(item, "key", ident).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise RateLimitedError(
                    f"key {key_id} is over its rate of {item}; retry after {wait} s", retry_after=wait
                )
        for item in self.items:
            self._limiter.hit(item, "key", ident)

    def check_upload(self, key_id: int, store: Store, *, verified: bool) -> None:
        """Whether the key may store one more model (queued for verification if ``verified``).

        Raises:
            QuotaExceededError: It stores :attr:`max_models` already.
            RateLimitedError: It has :attr:`max_pending` jobs and verifications waiting.
        """
        stored, waiting = store.model_counts(key_id)
        if stored >= self.max_models:
            raise QuotaExceededError(f"key {key_id} stores {stored} models, its quota; no more can be uploaded")
        self._check_pending(key_id, store, waiting if verified else 0)

    def check_job(self, key_id: int, store: Store, *, verified: bool) -> None:
        """Whether the key may queue one more training job.

        Raises:
            RateLimitedError: It has :attr:`max_pending` jobs and verifications waiting.
        """
        self._check_pending(key_id, store, store.model_counts(key_id)[1] if verified else 0)

    def _check_pending(self, key_id: int, store: Store, waiting_models: int) -> None:
        pending = store.pending_jobs(key_id) + waiting_models
        if pending >= self.max_pending:
            raise RateLimitedError(
                f"key {key_id} has {pending} training jobs and verifications waiting, its limit; "
                f"retry after {PENDING_RETRY_AFTER} s",
                retry_after=PENDING_RETRY_AFTER,
            )
