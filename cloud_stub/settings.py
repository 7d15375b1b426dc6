"""Server settings, declared once: defaults, validation, environment variables and the serve flags' help.

Every field reads the environment variable ``EDGE_CLOUD_<NAME>`` (pydantic-settings);
``edge-cloud serve`` has one flag per field, whose help is the field's description,
and values given as flags or keyword arguments win over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_stub.quotas import check_storage, parse_rate

__all__ = ["DEFAULT_REFERENCE_CACHE", "ENV_PREFIX", "ServerSettings"]

ENV_PREFIX = "EDGE_CLOUD_"
DEFAULT_REFERENCE_CACHE = Path(user_cache_dir("edge-cloud")) / "verifier"


class ServerSettings(BaseSettings):
    """What a cloud stub serves and where it keeps its data.

    Raises:
        pydantic.ValidationError: A value of the wrong type or out of range (a
            ``ValueError``; the message names the field).

    Example:
        >>> ServerSettings(max_batch="64").max_batch
        64
        >>> ServerSettings.from_env({"EDGE_CLOUD_VERIFY_BUDGET": "quick"}).verify_budget
        'quick'
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    database_url: str = Field(
        default="sqlite:///edge-cloud.db",
        description="SQLAlchemy URL: sqlite:///FILE.db (embedded) or postgresql+psycopg://USER@HOST/DB.",
    )
    kit: Path | None = Field(
        default=None,
        description="Kit whose head is served first and whose manifest fixes the feature shape; the default kit "
        "if omitted.",
    )
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Largest feature payload in bytes.")
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest uploaded model in bytes.")
    max_inflight_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1,
        description="Request bytes all requests together may hold while they are received and answered; a request "
        "that would pass it gets 503 with Retry-After.",
    )
    max_batch: int = Field(default=256, ge=1, description="Most features per request.")
    torch_threads: int = Field(default=1, ge=1, description="Threads for inference and training.")
    verify_uploads: bool = Field(default=True, description="Verify uploaded models in the background.")
    job_memory_mib: int = Field(
        default=4096,
        ge=1024,
        description="Address-space limit (RLIMIT_AS), in MiB, of each worker process that checks uploads, verifies "
        "them and trains heads; a job over it fails with the reason. torch alone takes about 900.",
    )
    job_seconds: float = Field(
        default=3600.0, gt=0, description="Wall-clock limit of one verification or head-training job, in seconds."
    )
    check_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock limit of the check an upload runs before it is accepted, in seconds.",
    )
    rate_limit: str = Field(
        default="50/second;3000/minute",
        description="Requests one key may make, in the limits notation ('50/second;3000/minute'); '' for none. "
        "Over it: 429 with Retry-After.",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where request counts live: memory:// (each replica counts its own) or a limits storage URI "
        "shared by replicas (redis://HOST:6379, with the redis package installed).",
    )
    max_models_per_key: int = Field(default=1000, ge=1, description="Models one key may store (403 beyond).")
    max_pending_per_key: int = Field(
        default=8,
        ge=1,
        description="Training jobs and verifications of one key that may wait or run at once (429 beyond).",
    )
    verify_budget: Literal["standard", "quick"] = Field(
        default="standard", description="'standard' (the benchmarked detector) or 'quick' verification."
    )
    reference_cache: Path | None = Field(
        default=DEFAULT_REFERENCE_CACHE,
        description="Folder where the verifier keeps its reference model's probe per built-in task and settings "
        "(computed once, then read by every job); empty: trained again in every job.",
    )

    @field_validator("rate_limit")
    @classmethod
    def _rate_in_limits_notation(cls, value: str) -> str:
        parse_rate(value)  # ValueError names what is wrong
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        check_storage(value)  # ValueError names the scheme or the missing package
        return value

    @field_validator("kit", mode="before")
    @classmethod
    def _empty_kit_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("reference_cache", mode="before")
    @classmethod
    def _empty_cache_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> ServerSettings:
        """Settings from a mapping of ``EDGE_CLOUD_*`` variables (tests, other process environments)."""
        values: dict[str, Any] = {
            k.removeprefix(ENV_PREFIX).lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX)
        }
        return cls(**values)

    @classmethod
    def describe(cls, name: str) -> str:
        """A field's description and its environment variable, for command-line help."""
        return f"{cls.model_fields[name].description} [env: {ENV_PREFIX}{name.upper()}]"
