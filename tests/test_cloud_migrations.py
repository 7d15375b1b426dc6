"""Schema migrations: a database made by the previous release opens, upgraded, with its data intact."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cloud_stub.store import MAX_ATTEMPTS, Store
from cloud_stub.store.database import _alembic_config
from cloud_stub.store.schema import metadata

RELEASE_0 = Path(__file__).with_name("data") / "cloud_store_release_0.sql"
RELEASE_0_KEY = "esk_release0-fixture-key"
HEAD = "0006"


def _release_0_database(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(RELEASE_0.read_text())
    return f"sqlite:///{path}"


def _differences(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_a_release_0_database_is_upgraded_with_its_data(tmp_path: Path) -> None:
    url = _release_0_database(tmp_path / "old.db")
    store = Store(url)
    assert store.revision() == HEAD
    assert _differences(store) == []
    key_id = store.check_api_key(RELEASE_0_KEY)
    assert key_id == 1 and [k.name for k in store.list_api_keys()] == ["phone-1"]
    job = store.job(1)
    assert (job.status, job.params, job.error, job.attempts) == ("failed", {"epochs": 1}, "interrupted", 0)
    model = store.model(1)
    assert (model.name, model.summary, model.status, model.attempts) == ("m.onnx", {"nodes": 3}, "unverified", 0)
    assert store.model_onnx(1) == b"onnx-bytes" and store.head_state(1) == b"head-bytes"
    assert store.active_head_id() == 1 and store.service_value("kit") == "orl-default:32x16x16:3:64"
    features, labels = store.load_dataset("pose")
    np.testing.assert_array_equal(features, np.arange(32, dtype=np.float32).reshape(2, 4, 2, 2) / 10)
    assert labels.tolist() == [0, 2]
    # the upgraded database takes new writes, idempotency included
    replay = store.add_samples("pose", features, labels, api_key_id=1, idempotency_key="batch-1")
    assert replay.replayed and replay.total == 2
    dataset_id, _ = store.add_verification_dataset(b"npz-bytes", name="d.npz", summary={"classes": 2}, api_key_id=1)
    assert store.verification_dataset_payload(dataset_id) == b"npz-bytes"
    assert store.add_verification_dataset(b"npz-bytes", name="again", summary={}, api_key_id=1) == (dataset_id, True)
    assert Store(url).revision() == HEAD  # opening again changes nothing


def test_a_new_database_matches_the_schema_and_migrations_go_both_ways(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.revision() == HEAD and _differences(store) == []
    with store.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0001")
    assert store.revision() == "0001"
    store.migrate()
    assert store.revision() == HEAD and _differences(store) == []


def test_replicas_opening_a_new_database_together_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(url).dispose()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Store(url).revision() == HEAD


def test_work_interrupted_again_and_again_is_not_restarted_forever(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'retries.db'}")
    key_id = store.check_api_key(store.create_api_key("k"))
    assert key_id is not None
    job = store.create_job("pose", {"epochs": 1})
    model, _ = store.add_model(
        b"x", name="m", task="fashion-mnist", summary={}, api_key_id=key_id, idempotency_key=None
    )
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert store.claim_job(job) and store.claim_model(model)  # a worker starts, then the service dies
        assert (store.job(job).attempts, store.model(model).attempts) == (attempt, attempt)
        restarted_jobs, restarted_models = store.unfinished_jobs(), store.models_to_verify()
        if attempt < MAX_ATTEMPTS:
            assert (restarted_jobs, restarted_models) == ([job], [model])
    assert (restarted_jobs, restarted_models) == ([], [])
    assert store.job(job).status == "failed" and f"{MAX_ATTEMPTS} times" in (store.job(job).error or "")
    record = store.model(model)
    assert record.status == "failed" and record.report is not None and "not started again" in record.report["error"]
