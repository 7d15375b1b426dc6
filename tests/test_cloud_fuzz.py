"""Schema-driven fuzzing: schemathesis generates requests from the service's own OpenAPI.

Against a real uvicorn process with a valid key, every operation gets schema-valid
(positive) and schema-violating (negative) requests: none may make the server fail
with a 5xx, documented responses must match their schemas, requests that break the
schema must be refused, and dropping the key must be refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
)

from cloud_stub import Store
from cloud_stub.local import local_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
EXAMPLES_PER_OPERATION = 15  # per operation and mode: 15 operations, within the suite's 15-minute budget
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
]


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str) -> Iterator[tuple[str, str]]:
    """A server on a fresh SQLite file with one key: ``(base URL, key)``."""
    folder: Path = tmp_path_factory.mktemp(name)
    url = f"sqlite:///{folder / f'{name}.db'}"
    store = Store(url)
    key = store.create_api_key("fuzzer")
    store.dispose()
    with local_server(url, log=folder / "server.log", extra_args=("--no-verify-uploads", *flags)) as base:
        yield base, key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    yield from _serve(tmp_path_factory, "fuzz")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_makes_the_server_fail(server: tuple[str, str], mode: GenerationMode) -> None:
    base, key = server
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    tried: list[str] = []
    unnegatable: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS, timeout=60)

        try:
            exercise()
        except Unsatisfiable:
            # Nothing to violate: an operation without parameters or body (GET /health).
            assert mode is GenerationMode.NEGATIVE, operation.label
            unnegatable.append(operation.label)
            continue
        tried.append(operation.label)
    print(f"{mode}: fuzzed {len(tried)} operations; no schema-violating request exists for {unnegatable}")
    assert len(tried) >= len(operations) - 3


@pytest.fixture(scope="module")
def unlimited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A server whose per-key limits never answer 429: a sequence's steps must not depend on earlier sequences."""
    unlimited = ("--rate-limit", "", "--max-pending-per-key", "1000000", "--max-models-per-key", "1000000")
    yield from _serve(tmp_path_factory, "stateful", *unlimited)


def test_sequences_of_linked_calls_never_make_the_server_fail(unlimited_server: tuple[str, str]) -> None:
    """schemathesis' stateful mode: calls chained through the links it infers (upload a model, then read it ...)."""
    base, key = unlimited_server
    machine = schemathesis.openapi.from_url(base + "/openapi.json").as_state_machine()
    stateful_checks = [not_a_server_error, response_schema_conformance, content_type_conformance]

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"headers": {"X-API-Key": key}, "timeout": 60}

        def validate_response(self, response: object, case: schemathesis.Case, **kwargs: object) -> None:
            case.validate_response(response, checks=stateful_checks)

    Workflow.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.generate],  # replaying against a server whose state moved on is not meaningful
        )
    )
