"""Server settings: every field has a flag in ``edge-cloud serve`` and an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "ServerSettings"]

ENV_PREFIX = "EDGE_CLOUD_"


@dataclass(frozen=True)
class ServerSettings:
    """What a cloud stub serves and where it keeps its data.

    Attributes:
        database_url: SQLAlchemy URL: ``sqlite:///path.db`` (the default, embedded) or
            ``postgresql+psycopg://user@host/db``.
        kit: Kit folder whose head is served first and whose manifest fixes the
            feature shape; ``None`` for the default kit.
        max_request_bytes: Largest feature payload (413 above it).
        max_model_bytes: Largest uploaded ONNX model (413 above it).
        max_batch: Most features in one request.
        torch_threads: Threads torch may use for inference and training.
        verify_uploads: Verify uploaded models in the background (the detector needs
            the task's data; off, uploads stay ``unverified``).
        verify_budget: ``standard`` (the benchmarked detector) or ``quick``.

    Example:
        >>> ServerSettings.from_env({"EDGE_CLOUD_MAX_BATCH": "64"}).max_batch
        64
    """

    database_url: str = "sqlite:///edge-cloud.db"
    kit: Path | None = None
    max_request_bytes: int = 16 * 1024 * 1024
    max_model_bytes: int = 64 * 1024 * 1024
    max_batch: int = 256
    torch_threads: int = 1
    verify_uploads: bool = True
    verify_budget: str = "standard"

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_model_bytes", "max_batch", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.verify_budget not in ("standard", "quick"):
            raise ValueError(f"verify_budget must be 'standard' or 'quick', got {self.verify_budget!r}")

    @classmethod
    def from_strings(
        cls, values: dict[str, str], *, base: ServerSettings | None = None, source: str = ""
    ) -> ServerSettings:
        """Settings from text values by field name (environment variables, ``key=value`` arguments).

        Raises:
            ValueError: An unknown field, or a value of the wrong type (``source`` prefixes the name).
        """
        settings = base or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; choose from {sorted(known)}")
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            default = getattr(cls(), name)
            label = f"{source}{name.upper()}" if source else name
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(f"{label} must be true or false, got {raw!r}")
                parsed[name] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                try:
                    parsed[name] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"{label} must be an integer, got {raw!r}") from exc
            elif name == "kit":
                parsed[name] = Path(raw) if raw else None
            else:
                parsed[name] = raw
        return replace(settings, **parsed)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerSettings:
        """Settings from ``EDGE_CLOUD_*`` variables (``EDGE_CLOUD_DATABASE_URL`` ...), defaults otherwise."""
        env = os.environ if environ is None else environ
        values = {f.name: env[ENV_PREFIX + f.name.upper()] for f in fields(cls) if ENV_PREFIX + f.name.upper() in env}
        return cls.from_strings(values, source=ENV_PREFIX)
