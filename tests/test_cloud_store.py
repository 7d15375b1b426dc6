"""The store on SQLite (always) and PostgreSQL (when a server can be started here).

The same tests run on both back ends: keys are hashed at rest, uploads are
idempotent, concurrent writers lose nothing, and a new connection (a restart) sees
every committed row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from postgres_helpers import temporary_postgres
from typer.testing import CliRunner

from cloud_stub import ConflictError, NotFoundError, Store, StoreError
from cloud_stub.cli.root import app as cloud_app
from cloud_stub.store import DatasetSummary, hash_api_key
from edge_sdk.cli import app

FEATURE = (4, 2, 2)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        with temporary_postgres() as url:
            yield url
    except RuntimeError as exc:
        print(f"PostgreSQL tests skipped: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    # One database per test: drop the tables the previous test made.
    store = Store(url)
    _drop_everything(store)
    store.dispose()
    yield url


def _drop_everything(store: Store) -> None:
    from cloud_stub.store.schema import metadata

    metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def _batch(value: float, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, *FEATURE), value, np.float32), np.arange(n) % 3


def test_keys_are_stored_as_hashes_and_can_be_revoked(store_url: str) -> None:
    store = Store(store_url)
    key = store.create_api_key("device")
    with store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT key_hash FROM api_keys")]
    assert stored == [hash_api_key(key)] and key not in stored
    assert store.check_api_key(key) is not None
    with pytest.raises(ConflictError):
        store.create_api_key("device")
    store.revoke_api_key("device")
    assert store.check_api_key(key) is None
    with pytest.raises(NotFoundError):
        store.revoke_api_key("device")
    store.dispose()


def test_idempotent_upload_and_restart(store_url: str) -> None:
    store = Store(store_url)
    key_id = store.check_api_key(store.create_api_key("device"))
    assert key_id is not None
    features, labels = _batch(1.5)
    first = store.add_samples("d", features, labels, api_key_id=key_id, idempotency_key="k1")
    again = store.add_samples("d", features, labels, api_key_id=key_id, idempotency_key="k1")
    assert (first.replayed, again.replayed, again.batch_id, again.total) == (False, True, first.batch_id, 3)
    with pytest.raises(ConflictError):
        store.add_samples("d", *_batch(2.5), api_key_id=key_id, idempotency_key="k1")
    store.add_samples("d", *_batch(3.5, n=2), api_key_id=key_id, idempotency_key=None)
    store.add_samples("d", *_batch(4.5, n=2), api_key_id=key_id, idempotency_key=None)  # no key: stored again
    store.dispose()
    reopened = Store(store_url)
    loaded_features, loaded_labels = reopened.load_dataset("d")
    np.testing.assert_array_equal(loaded_features[:3], features)
    assert loaded_labels.tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert reopened.dataset_summary("d") == DatasetSummary(
        dataset="d", samples=7, batches=3, label_counts={"0": 3, "1": 3, "2": 1}
    )
    with pytest.raises(NotFoundError):
        reopened.dataset_summary("other")
    reopened.dispose()


def test_concurrent_writers_lose_nothing(store_url: str) -> None:
    store = Store(store_url)
    key_id = store.check_api_key(store.create_api_key("device"))
    assert key_id is not None
    n, errors = 24, []

    def write(i: int) -> None:
        try:
            store.add_samples("c", *_batch(float(i)), api_key_id=key_id, idempotency_key=f"k{i}")
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count_rows("sample_batches") == n
    features, _ = store.load_dataset("c")
    assert sorted(set(features[:, 0, 0, 0].tolist())) == [float(i) for i in range(n)]
    store.dispose()


def test_jobs_heads_and_models_round_trip(store_url: str) -> None:
    store = Store(store_url)
    key_id = store.check_api_key(store.create_api_key("device"))
    assert key_id is not None
    head = store.add_head(b"weights", source="kit", activate=True)
    assert store.active_head_id() == head and store.head_state(head) == b"weights"
    job = store.create_job("d", {"epochs": 1})
    assert store.unfinished_jobs() == [job]
    store.update_job(job, status="succeeded", head_id=head)
    assert store.unfinished_jobs() == [] and store.job(job).params == {"epochs": 1}
    with pytest.raises(ValueError):
        store.update_job(job, status="exploded")
    model, replayed = store.add_model(
        b"onnx", name="m", task="orl-pose", summary={"a": 1}, api_key_id=key_id, idempotency_key="m1"
    )
    assert not replayed and store.add_model(
        b"onnx", name="m", task="orl-pose", summary={}, api_key_id=key_id, idempotency_key="m1"
    ) == (model, True)
    record = store.model(model)
    assert record.status == "unverified" and record.summary == {"a": 1} and not hasattr(record, "onnx")
    store.dispose()


def test_bad_database_urls_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        Store("not a url")
    with pytest.raises(StoreError, match="sqlite or postgresql"):
        Store("mysql://x@localhost/db")
    with pytest.raises(StoreError, match="in-memory"):
        Store("sqlite://")
    with pytest.raises(StoreError, match="cannot open"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    url = ["--database-url", f"sqlite:///{tmp_path / 'k.db'}"]
    created = runner.invoke(cloud_app, ["keys", "create", "--name", "phone", *url])
    assert created.exit_code == 0 and created.output.startswith("esk_")
    duplicate = runner.invoke(cloud_app, ["keys", "create", "--name", "phone", *url])
    assert duplicate.exit_code == 2 and "exists" in duplicate.output
    assert "phone\t" in runner.invoke(cloud_app, ["keys", "list", *url]).output
    assert runner.invoke(cloud_app, ["keys", "revoke", "--name", "phone", *url]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["cloud", "keys", "list", *url]).output
    assert Store(url[1]).check_api_key(created.output.strip()) is None


def test_service_runs_on_postgresql_and_keeps_data_across_a_restart(postgres_url: str, tmp_path: Path) -> None:
    from cloud_stub.local import local_server
    from edge_sdk.client import CloudClient

    store = Store(postgres_url)
    _drop_everything(store)
    store.migrate()
    key = store.create_api_key("device")
    features = np.random.default_rng(0).normal(size=(6, 32, 16, 16)).astype(np.float32)
    with local_server(postgres_url, log=tmp_path / "pg.log") as base, CloudClient(base, api_key=key) as client:
        assert client.version()["database"] == "postgresql"
        first = client.predict(features)
        client.upload_samples("pg", features, np.array([0, 1, 2, 0, 1, 2]))
    with local_server(postgres_url, log=tmp_path / "pg.log") as base, CloudClient(base, api_key=key) as client:
        assert client.dataset("pg")["samples"] == 6
        np.testing.assert_allclose(client.predict(features).probabilities, first.probabilities, atol=1e-6)
    assert store.count_rows("sample_batches") == 1
    store.dispose()


def test_replicas_starting_together_store_one_initial_head(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(4)]
    results: list[int] = []
    barrier = threading.Barrier(len(stores))

    def start(store: Store) -> None:
        barrier.wait()
        results.append(store.initial_head(b"kit-head"))
        store.setdefault_service_value("kit", "orl-default:32x16x16")

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and stores[0].count_rows("heads") == 1
    assert stores[0].setdefault_service_value("kit", "another") == "orl-default:32x16x16"
    for s in stores:
        s.dispose()
