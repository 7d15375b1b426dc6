"""Units of the cloud link: wire format, client retries, settings, ONNX upload checks, head training."""

from __future__ import annotations

import datetime
import email.utils
import io
import json
import struct
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from numpy.lib import format as npy_format
from onnx import TensorProto, helper
from typer.testing import CliRunner

from cloud_helpers import linear_classifier_onnx
from cloud_stub import ConflictError, ModelRejectedError, ServerSettings, Store
from cloud_stub.heads import ServedHead, fit_head, head_from_bytes, head_to_bytes
from cloud_stub.isolation import JobLimits
from cloud_stub.settings import DEFAULT_REFERENCE_CACHE
from cloud_stub.training import BackgroundWorker
from cloud_stub.uploads import check_onnx_model
from conftest import TINY
from edge_sdk.cli import app
from edge_sdk.client import CloudClient, PayloadFormatError, decode_tensors, encode_tensors
from edge_sdk.client.payloads import check_features, check_labels
from edge_sdk.data.folder import read_labels_csv
from edge_sdk.errors import CloudRequestError, CloudUnavailableError, LabelFileError, NonFiniteError, TensorShapeError
from edge_sdk.kit.models import PoseHead

# --- wire format ---------------------------------------------------------------------------------


def test_safetensors_and_npy_round_trip() -> None:
    features = np.random.default_rng(0).normal(size=(3, 4, 2, 2)).astype(np.float32)
    decoded = decode_tensors(encode_tensors({"features": features, "labels": np.arange(3)}))
    np.testing.assert_array_equal(decoded["features"], features)
    buffer = io.BytesIO()
    np.save(buffer, features)
    np.testing.assert_array_equal(decode_tensors(buffer.getvalue())["features"], features)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"short",
        struct.pack("<Q", 10**12) + b"{}",  # header size beyond the body
        struct.pack("<Q", 2) + b"[]",  # header is not an object
        struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",  # header is not UTF-8 JSON
        struct.pack("<Q", 2) + b"{}" + b"extra",  # header fine, body not a safetensors layout
    ],
    ids=["empty", "short", "huge-header", "list-header", "binary-header", "trailing-bytes"],
)
def test_malformed_payloads_raise_a_typed_error(body: bytes) -> None:
    with pytest.raises(PayloadFormatError):
        decode_tensors(body)


def test_object_npy_is_refused_without_unpickling() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    buffer = io.BytesIO()
    np.save(buffer, np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(PayloadFormatError, match="unpickling"):
        decode_tensors(buffer.getvalue())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_header_is_checked_against_the_body_before_anything_is_allocated() -> None:
    header = npy_format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header["shape"] = (100_000, 100_000, 100)  # 3.64 TiB declared
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, header)
    body = buffer.getvalue() + bytes(64)
    assert len(body) < 256
    with pytest.raises(PayloadFormatError, match=r"declares shape \(100000, 100000, 100\).*64 bytes follow"):
        decode_tensors(body)
    whole = _npy(np.zeros((2, 3), np.float32))
    with pytest.raises(PayloadFormatError, match="declares"):
        decode_tensors(whole[:-4])  # truncated
    with pytest.raises(PayloadFormatError, match="declares"):
        decode_tensors(whole + b"\0" * 4)  # trailing bytes


def test_npy_byte_order_and_memory_order_are_normalised() -> None:
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for variant in (values.astype(">f4"), np.asfortranarray(values), np.asfortranarray(values.astype(">f4"))):
        decoded = decode_tensors(_npy(variant))["features"]
        np.testing.assert_array_equal(decoded, values)
        assert decoded.dtype == np.float32 and decoded.flags.c_contiguous and decoded.flags.writeable


def test_structured_npy_is_refused() -> None:
    record = np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")])
    with pytest.raises(PayloadFormatError, match="structured"):
        decode_tensors(_npy(record))


def test_feature_and_label_checks() -> None:
    good = np.zeros((2, 4, 2, 2), np.float32)
    assert check_features(good, (4, 2, 2), max_batch=2).shape == (2, 4, 2, 2)
    with pytest.raises(TensorShapeError, match="float32"):
        check_features(good.astype(np.float16), (4, 2, 2), max_batch=2)
    with pytest.raises(TensorShapeError, match="between 1 and 1"):
        check_features(good, (4, 2, 2), max_batch=1)
    with pytest.raises(TensorShapeError, match="shape"):
        check_features(good[:, :2], (4, 2, 2), max_batch=2)
    bad = good.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="1 of 2"):
        check_features(bad, (4, 2, 2), max_batch=2)
    assert check_labels(np.array([0, 2], np.int32), batch=2, num_classes=3).dtype == np.int64
    with pytest.raises(TensorShapeError, match=r"\[0, 3\)"):
        check_labels(np.array([0, 3]), batch=2, num_classes=3)


# --- client --------------------------------------------------------------------------------------


def _client(handler: httpx.MockTransport, **options: float) -> CloudClient:
    return CloudClient("http://cloud", api_key="esk_test", backoff=0.001, transport=handler, **options)  # type: ignore[arg-type]


def test_client_retries_transient_failures_with_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused")
        if len(seen) == 2:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(201, json={"dataset": "d", "batch_id": 1, "added": 2, "total": 2, "replayed": False})

    result = _client(httpx.MockTransport(handle)).upload_samples("d", np.zeros((2, 4), np.float32), np.array([0, 1]))
    assert result["total"] == 2 and len(seen) == 3
    assert {r.headers["Idempotency-Key"] for r in seen} == {seen[0].headers["Idempotency-Key"]}
    assert all(r.headers["X-API-Key"] == "esk_test" for r in seen)
    assert decode_tensors(seen[-1].content)["labels"].tolist() == [0, 1]


def test_client_does_not_retry_a_refusal_and_reports_the_servers_reason() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"detail": "features must be float32"})

    with pytest.raises(CloudRequestError, match="422: features must be float32") as refused:
        _client(httpx.MockTransport(handle)).predict(np.zeros((1, 4), np.float32))
    assert refused.value.status_code == 422 and len(calls) == 1


def test_client_gives_up_after_its_retries_with_a_clear_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    start = time.perf_counter()
    with pytest.raises(CloudUnavailableError, match="after 3 attempt"):
        _client(httpx.MockTransport(handle), retries=2).version()
    assert time.perf_counter() - start < 5
    with pytest.raises(CloudRequestError, match="503"):
        _client(httpx.MockTransport(lambda r: httpx.Response(503, text="down")), retries=1).version()


def test_client_checks_features_before_sending() -> None:
    def handle(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not be reached
        raise AssertionError("sent")

    client = _client(httpx.MockTransport(handle))
    with pytest.raises(NonFiniteError):
        client.predict(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(TensorShapeError):
        client.predict(np.zeros(4, np.float32))
    with pytest.raises(TensorShapeError):
        client.predict(np.zeros((1, 4), np.int64))


# --- settings, uploads -------------------------------------------------------------------------


def test_settings_from_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "EDGE_CLOUD_DATABASE_URL": "sqlite:///x.db",
            "EDGE_CLOUD_KIT": "/k",
            "EDGE_CLOUD_MAX_MODEL_BYTES": "10",
            "UNRELATED": "1",
        }
    )
    assert (settings.database_url, settings.kit, settings.max_model_bytes) == ("sqlite:///x.db", Path("/k"), 10)
    with pytest.raises(ValueError, match=r"max_batch\n.*valid integer"):
        ServerSettings.from_env({"EDGE_CLOUD_MAX_BATCH": "many"})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ServerSettings(max_batch=0)
    with pytest.raises(ValueError, match="verify_budget"):
        ServerSettings(verify_budget="thorough")
    with pytest.raises(ValueError, match="Extra inputs"):
        ServerSettings.from_env({"EDGE_CLOUD_MAX_BACH": "3"})


def test_settings_read_the_process_environment_and_arguments_win(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGE_CLOUD_MAX_BATCH", "7")
    monkeypatch.setenv("EDGE_CLOUD_VERIFY_UPLOADS", "false")
    assert (ServerSettings().max_batch, ServerSettings().verify_uploads) == (7, False)
    assert ServerSettings(max_batch=9).max_batch == 9
    monkeypatch.setenv("EDGE_CLOUD_REFERENCE_CACHE", "")
    assert ServerSettings().reference_cache is None  # empty: the reference is trained in every job
    monkeypatch.delenv("EDGE_CLOUD_REFERENCE_CACHE")
    assert ServerSettings().reference_cache == DEFAULT_REFERENCE_CACHE


def test_onnx_checks_summarise_a_valid_model() -> None:
    summary = check_onnx_model(linear_classifier_onnx((1, 28, 28), 10), task="fashion-mnist")
    assert summary["input"]["shape"] == ["batch", 1, 28, 28] and summary["parameters"] == 10 * 784 + 10


def _with_external_initializer() -> bytes:
    model = onnx.load_model_from_string(linear_classifier_onnx((1, 64, 64), 3))
    weight = model.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="/etc/passwd")
    return model.SerializeToString()


def _invalid_graph() -> bytes:
    node = helper.make_node("Relu", ["missing_input"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x80\x04\x95pickle", "not an ONNX model"),
        (_with_external_initializer(), "external data"),
        (_invalid_graph(), "onnx.checker"),
        (linear_classifier_onnx((3, 64, 64), 3), "needs \\(batch, 1, 64, 64\\)"),
        (linear_classifier_onnx((1, 64, 64), 5), "3 classes"),
    ],
    ids=["pickle", "external-data", "checker", "input-shape", "classes"],
)
def test_hostile_or_unfit_models_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(ModelRejectedError, match=message):
        check_onnx_model(body, task="orl-pose")


# --- heads and the training worker ---------------------------------------------------------------


def _separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    shape = (TINY.feature_channels, TINY.image_size // 4, TINY.image_size // 4)
    features = rng.normal(size=(n, *shape)).astype(np.float32) + 4.0 * labels[:, None, None, None]
    return features.astype(np.float32), labels


def test_fit_head_is_seeded_and_learns_a_separable_task() -> None:
    features, labels = _separable(90)
    first = fit_head(features, labels, arch=TINY, epochs=60, seed=1)
    second = fit_head(features, labels, arch=TINY, epochs=60, seed=1)
    assert first.val_accuracy > 0.8 and (first.train_samples, first.val_samples) == (72, 18)
    for a, b in zip(first.head.state_dict().values(), second.head.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConflictError, match="too few"):
        fit_head(features[:2], labels[:2], arch=TINY)


def test_head_bytes_round_trip_and_served_head_swap() -> None:
    head = PoseHead(TINY).eval()
    copy = head_from_bytes(head_to_bytes(head), TINY)
    x = torch.randn(3, TINY.feature_channels, 4, 4)
    torch.testing.assert_close(copy(x), head(x))
    served = ServedHead()
    with pytest.raises(ConflictError, match="no head"):
        served.predict(x.numpy())
    served.swap(copy, 7)
    labels, probabilities, head_id = served.predict(x.numpy())
    assert head_id == 7 and np.allclose(probabilities.sum(1), 1) and labels.tolist() == probabilities.argmax(1).tolist()


def test_worker_resumes_a_job_left_running_by_a_stopped_server(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    key_id = store.check_api_key(store.create_api_key("k"))
    assert key_id is not None
    features, labels = _separable(40)
    store.add_samples("d", features, labels, api_key_id=key_id, idempotency_key=None)
    job = store.create_job("d", {"epochs": 2, "seed": 0, "validation_fraction": 0.2, "activate": True})
    store.update_job(job, status="running")  # the server died mid-job
    failing = store.create_job("missing", {"epochs": 2, "seed": 0, "validation_fraction": 0.2, "activate": True})
    served = ServedHead()
    worker = BackgroundWorker(store, arch=TINY, served=served)
    worker.start()
    worker.stop()
    record = store.job(job)
    assert record.status == "succeeded" and served.head_id == record.head_id == store.active_head_id()
    assert store.job(failing).status == "failed" and "NotFoundError" in (store.job(failing).error or "")


def test_a_verification_past_its_time_limit_fails_with_the_reason_and_is_not_run_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    key_id = store.check_api_key(store.create_api_key("k"))
    assert key_id is not None
    model_id, _ = store.add_model(
        linear_classifier_onnx((1, 64, 64), 3),
        name="m.onnx",
        task="orl-pose",
        summary={},
        api_key_id=key_id,
        idempotency_key=None,
    )
    limits = JobLimits(memory_mib=None, seconds=0.2)
    worker = BackgroundWorker(store, arch=TINY, served=ServedHead(), verify_budget="quick", job_limits=limits)
    worker.start()
    worker.stop(timeout=60)
    record = store.model(model_id)
    assert record.status == "failed" and record.attempts == 1
    assert record.report == {"error": "JobLimitError: the job ran past its limit of 0.2 s"}
    assert store.models_to_verify() == []  # a restart does not run it again


# --- labels CSV ----------------------------------------------------------------------------------


def test_labels_csv(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    good.write_text("file,label\na.png,1\nsub/b.png,2\n")
    assert read_labels_csv(good) == {"a.png": 1, "sub/b.png": 2}
    for text, message in [
        ("name,label\na,1\n", "header"),
        ("file,label\na,x\n", "not an integer"),
        ("file,label\na,1\na,2\n", "twice"),
    ]:
        good.write_text(text)
        with pytest.raises(LabelFileError, match=message):
            read_labels_csv(good)
    with pytest.raises(LabelFileError, match="cannot read"):
        read_labels_csv(tmp_path / "missing.csv")


def test_orl_faces_writes_pose_labels_for_every_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "orl-faces", "--split", "private-test", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    labels = read_labels_csv(tmp_path / "labels.csv")
    assert sorted(labels) == sorted(p.name for p in tmp_path.glob("*.pgm")) and len(labels) == 80
    assert set(labels.values()) == {0, 1, 2}


def test_craft_upload_options_are_validated_before_any_work(tmp_path: Path) -> None:
    runner = CliRunner()
    faces = tmp_path / "faces"
    runner.invoke(app, ["data", "orl-faces", "--out", str(faces)])
    out = str(tmp_path / "o.npz")
    no_upload = runner.invoke(app, ["craft", str(faces), "--out", out, "--dataset", "d"])
    assert no_upload.exit_code == 2 and "--upload" in no_upload.output
    no_key = runner.invoke(
        app, ["craft", str(faces), "--out", out, "--upload", "http://x"], env={"EDGE_SDK_API_KEY": ""}
    )
    assert no_key.exit_code == 2 and "api-key" in no_key.output
    (faces / "labels.csv").write_text("file,label\n" + json.dumps("x")[1:-1] + ".pgm,0\n")
    unlabelled = runner.invoke(
        app,
        [
            "craft",
            str(faces),
            "--out",
            out,
            "--upload",
            "http://x",
            "--api-key",
            "k",
            "--dataset",
            "d",
            "--labels",
            str(faces / "labels.csv"),
        ],
    )
    assert unlabelled.exit_code == 2 and "no label for 80 image(s)" in unlabelled.output
    assert not (tmp_path / "o.npz").exists()


def test_a_replica_follows_the_head_another_replica_activated(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    first = PoseHead(TINY).eval()
    first_id = store.initial_head(head_to_bytes(first))
    replica = ServedHead(first, first_id)
    torch.manual_seed(5)
    trained = PoseHead(TINY).eval()
    trained_id = store.add_head(head_to_bytes(trained), source="trained", activate=True)  # done by another replica
    replica.refresh(store, TINY, min_interval=3600)
    assert replica.head_id == first_id  # checked at most once per interval
    replica.refresh(store, TINY, min_interval=0)
    x = torch.randn(2, TINY.feature_channels, 4, 4)
    _, probabilities, head_id = replica.predict(x.numpy())
    assert head_id == trained_id
    np.testing.assert_allclose(probabilities, torch.softmax(trained(x), 1).detach().numpy(), atol=1e-6)


def test_a_full_disk_is_507_and_stores_nothing(tmp_path: Path) -> None:
    """SQLite's max_page_count makes the database 'full' exactly as a full disk would."""
    import asyncio

    from sqlalchemy import event

    from cloud_stub.app import create_app
    from conftest import make_tiny_kit

    settings = ServerSettings(database_url=f"sqlite:///{tmp_path / 'full.db'}")
    service = create_app(settings, kit=make_tiny_kit())
    store: Store = service.state.store
    key = store.create_api_key("device")
    pages = store.engine.connect().exec_driver_sql("PRAGMA page_count").scalar_one()
    event.listen(store.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages + 2}"))
    store.engine.dispose()
    features = np.zeros((64, TINY.feature_channels, 4, 4), np.float32)
    body = encode_tensors({"features": features, "labels": np.zeros(64, np.int64)})

    async def upload() -> httpx.Response:
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            return await client.post("/v1/datasets/d/samples", content=body, headers={"X-API-Key": key})

    response = asyncio.run(upload())
    assert response.status_code == 507 and "nothing was stored" in response.json()["detail"]
    assert store.count_rows("sample_batches") == 0


# --- per-key limits ------------------------------------------------------------------------------


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_are_served(tmp_path: Path) -> None:
    import asyncio

    from cloud_stub.app import create_app
    from conftest import make_tiny_kit

    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'rate.db'}",
        rate_limit="3/minute",
        max_models_per_key=1,
        max_pending_per_key=1,
        verify_uploads=False,
    )
    service = create_app(settings, kit=make_tiny_kit())
    store: Store = service.state.store
    busy, quiet = store.create_api_key("busy"), store.create_api_key("quiet")

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            return [await client.get("/v1/version", headers={"X-API-Key": k}) for k in (busy,) * 4 + (quiet,)]

    responses = asyncio.run(calls())
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 200]
    refused = responses[3]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and "over its rate of 3 per 1 minute" in refused.text


def test_a_key_at_its_model_quota_gets_403_and_one_with_work_waiting_429(tmp_path: Path) -> None:
    import asyncio

    from cloud_stub.app import create_app
    from conftest import make_tiny_kit

    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'quota.db'}",
        max_models_per_key=1,
        max_pending_per_key=1,
        verify_uploads=False,
    )
    service = create_app(settings, kit=make_tiny_kit())
    store: Store = service.state.store
    key = store.create_api_key("operator")
    key_id = store.check_api_key(key)
    assert key_id is not None
    model = linear_classifier_onnx((1, 28, 28), 10)
    store.add_model(model, name="m.onnx", task="fashion-mnist", summary={}, api_key_id=key_id, idempotency_key="first")
    store.add_samples("d", *_separable(40), api_key_id=key_id, idempotency_key=None)
    waiting = store.create_job(
        "d", {"epochs": 1, "seed": 0, "validation_fraction": 0.2, "activate": False}, api_key_id=key_id
    )

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=service)
        headers = {"X-API-Key": key}
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            upload = await client.post("/v1/models?task=fashion-mnist", content=model, headers=headers)
            retry = await client.post(
                "/v1/models?task=fashion-mnist", content=model, headers={**headers, "Idempotency-Key": "first"}
            )
            train = await client.post("/v1/heads", json={"dataset": "d", "epochs": 1}, headers=headers)
            store.update_job(waiting, status="succeeded")
            again = await client.post("/v1/heads", json={"dataset": "d", "epochs": 1}, headers=headers)
            return [upload, retry, train, again]

    upload, retry, train, again = asyncio.run(calls())
    assert upload.status_code == 403 and "stores 1 models, its quota" in upload.text
    assert retry.status_code == 201 and retry.json()["replayed"]  # a retry of a stored upload is not refused
    assert train.status_code == 429 and train.headers["Retry-After"] == "30"
    assert again.status_code == 202 and store.job(again.json()["id"]).api_key_id == key_id
    assert store.count_rows("uploaded_models") == 1


def test_client_waits_as_long_as_retry_after_asks_and_refuses_waits_over_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow down"})])

    def handle(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"version": "x"}))

    assert _client(httpx.MockTransport(handle)).version() == {"version": "x"}
    assert waits == [7.0]
    later = email.utils.format_datetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1), usegmt=True)
    calls: list[httpx.Request] = []

    def too_long(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": later}, json={"detail": "maintenance"})

    with pytest.raises(CloudRequestError, match="503: maintenance"):
        _client(httpx.MockTransport(too_long), max_retry_after=60).version()
    assert len(calls) == 1 and waits == [7.0]


def test_rates_and_their_storage_are_checked_when_the_settings_are_read() -> None:
    assert ServerSettings(rate_limit="").rate_limit == ""
    with pytest.raises(ValueError, match="rate_limit"):
        ServerSettings(rate_limit="lots")
    with pytest.raises(ValueError, match="unknown rate-limit storage 'memroy://'"):
        ServerSettings(rate_limit_storage="memroy://")
    with pytest.raises(ValueError, match="greater than or equal to 1024"):
        ServerSettings(job_memory_mib=512)


def test_uploads_over_the_checks_in_flight_are_answered_busy_at_once(tmp_path: Path) -> None:
    from cloud_stub.training import ServerBusyError
    from cloud_stub.uploads import UploadTask

    worker = BackgroundWorker(Store(f"sqlite:///{tmp_path / 'b.db'}"), arch=TINY, served=ServedHead(), checks_waiting=1)
    assert worker._check_slots.acquire(blocking=False)  # one check running
    started = time.perf_counter()
    with pytest.raises(ServerBusyError, match="1 uploads are being checked; retry after 10 s") as busy:
        worker.check_upload(linear_classifier_onnx((1, 64, 64), 3), UploadTask("orl-pose"))
    assert busy.value.retry_after == 10 and time.perf_counter() - started < 1
    worker._check_slots.release()
    assert worker.check_upload(linear_classifier_onnx((1, 64, 64), 3), UploadTask("orl-pose"))["operators"]
    worker.stop()


def test_safetensors_offsets_are_checked_against_the_body_before_anything_is_allocated() -> None:
    def body(header: dict[str, object], data: bytes) -> bytes:
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + data

    cases = {
        "4 TiB declared": {"features": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}},
        "offsets past the body": {"features": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
        "shape and offsets disagree": {"features": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 4]}},
        "overlapping tensors": {
            "features": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "labels": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
        },
    }
    for header in cases.values():
        with pytest.raises(PayloadFormatError, match="malformed safetensors payload"):
            decode_tensors(body(header, bytes(8)))


def test_bodies_in_flight_share_one_budget_and_requests_over_it_get_503() -> None:
    import asyncio

    from cloud_stub.limits import BodySizeLimit

    release = asyncio.Event()

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        body = b""
        while True:
            message = await receive()  # type: ignore[operator]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await release.wait()  # holds its body, as a handler does while it works
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": str(len(body)).encode()})  # type: ignore[operator]

    limited = BodySizeLimit(inner, limit_for=lambda path: 100, max_inflight_bytes=150)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            first = asyncio.create_task(client.post("/v1/models", content=bytes(100)))
            await asyncio.sleep(0.05)
            second = await client.post("/v1/models", content=bytes(100))  # 200 bytes in flight: over the budget
            small = asyncio.create_task(client.post("/v1/models", content=bytes(40)))  # 140: within it
            await asyncio.sleep(0.05)
            release.set()
            responses = [await first, second, await small]
            responses.append(await client.post("/v1/models", content=bytes(100)))  # all released
            return responses

    first, second, small, later = asyncio.run(run())
    assert (first.status_code, first.text) == (200, "100")
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert "receiving too much at once" in second.json()["detail"]
    assert (small.status_code, later.status_code) == (200, 200) and limited.inflight == 0
