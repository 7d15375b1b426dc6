"""End to end against a real uvicorn process: the device crafts, uploads, and gets predictions.

One server per module on a free loopback port with a SQLite file; the tests inspect
the same database through :class:`cloud_stub.Store` to prove that refused requests
store nothing and that concurrent uploads lose nothing.
"""

from __future__ import annotations

import io
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cloud_helpers import linear_classifier_onnx
from cloud_stub import Store
from cloud_stub.heads import fit_head
from cloud_stub.local import local_server
from cloud_stub.verification.hostile import memory_bomb
from edge_sdk.cli import app
from edge_sdk.client import CloudClient, encode_tensors
from edge_sdk.crafting.crafter import CrafterConfig, craft
from edge_sdk.data.orl import load_orl
from edge_sdk.errors import CloudRequestError, CloudUnavailableError, NonFiniteError
from edge_sdk.kit import Kit, load_kit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
runner = CliRunner()
TABLES = ("api_keys", "sample_batches", "explanation_batches", "heads", "training_jobs", "uploaded_models")
FAST_CRAFT = CrafterConfig(steps=2, inversion_steps=5, final_inversion_steps=5, prior_samples=16)


@dataclass
class Cloud:
    base: str
    key: str
    store: Store
    database_url: str
    log: Path

    def client(self, **options: float) -> CloudClient:
        return CloudClient(self.base, api_key=self.key, **options)  # type: ignore[arg-type]

    def post(
        self, path: str, content: bytes, *, key: str | None = "same", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-Key"] = self.key if key == "same" else key
        return httpx.post(self.base + path, content=content, headers=sent, timeout=30)

    def counts(self) -> dict[str, int]:
        return {table: self.store.count_rows(table) for table in TABLES}


def create_key(database_url: str, name: str) -> str:
    result = runner.invoke(app, ["cloud", "keys", "create", "--name", name, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture(scope="module")
def kit() -> Kit:
    return load_kit()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    folder = tmp_path_factory.mktemp("cloud")
    url = f"sqlite:///{folder / 'cloud.db'}"
    key = create_key(url, "device-1")
    log = folder / "server.log"
    with local_server(url, log=log, extra_args=("--no-verify-uploads", "--job-memory-mib", "2048")) as base:
        store = Store(url)
        yield Cloud(base=base, key=key, store=store, database_url=url, log=log)
        store.dispose()


@pytest.fixture(scope="module")
def pose_features(kit: Kit) -> tuple[np.ndarray, np.ndarray]:
    """Raw features of the 200 public faces with their pose labels (a realistic collection)."""
    faces = load_orl("public")
    return kit.encode(faces.images).numpy(), faces.pose.numpy()


def test_health_needs_no_key_but_everything_else_does(cloud: Cloud) -> None:
    assert httpx.get(cloud.base + "/health").json()["status"] == "ok"
    assert httpx.get(cloud.base + "/v1/version").status_code == 401
    assert httpx.get(cloud.base + "/v1/version", headers={"X-API-Key": "esk_not-a-key"}).status_code == 401
    version = cloud.client().version()
    assert version["kit"]["feature_shape"] == [32, 16, 16] and version["database"] == "sqlite"
    assert "/v1/predict" in httpx.get(cloud.base + "/openapi.json").json()["paths"]


def test_crafted_features_predicted_in_the_cloud_match_the_head_run_locally(cloud: Cloud, kit: Kit) -> None:
    faces = load_orl("private-test")
    crafted = craft(kit, images=faces.images[:4], config=FAST_CRAFT).features
    with cloud.client() as client:
        prediction = client.predict(crafted)
    assert kit.head is not None
    with torch.no_grad():
        local = torch.softmax(kit.head(crafted), dim=1).numpy()
    assert prediction.head_id == cloud.client().version()["active_head_id"]
    np.testing.assert_allclose(prediction.probabilities, local, atol=1e-5)
    np.testing.assert_array_equal(prediction.labels, local.argmax(1))


def test_npy_payload_is_accepted_like_safetensors(cloud: Cloud, pose_features: tuple[np.ndarray, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.save(buffer, pose_features[0][:3])
    from_npy = cloud.post("/v1/predict", buffer.getvalue())
    from_safetensors = cloud.post("/v1/predict", encode_tensors({"features": pose_features[0][:3]}))
    assert from_npy.status_code == 200
    assert from_npy.json()["labels"] == from_safetensors.json()["labels"]


def test_collect_train_predict(cloud: Cloud, pose_features: tuple[np.ndarray, np.ndarray], kit: Kit) -> None:
    features, labels = pose_features
    with cloud.client() as client:
        for start in range(0, len(labels), 50):
            stored = client.upload_samples("pose-public", features[start : start + 50], labels[start : start + 50])
        assert stored["total"] == len(labels)
        summary = client.dataset("pose-public")
        assert summary["samples"] == 200 and summary["batches"] == 4
        assert sum(summary["label_counts"].values()) == 200
        job = client.train_head("pose-public", epochs=15, seed=3)
        assert job["status"] == "queued"
        done = client.wait_for_job(job["id"], timeout=240)
        prediction = client.predict(features[:20])
    assert done["status"] == "succeeded" and done["head_id"] == prediction.head_id
    # The same seeded training run locally gives the same head, hence the same answers.
    torch.set_num_threads(1)
    local = fit_head(features, labels, arch=kit.architecture, epochs=15, seed=3)
    assert done["val_accuracy"] == pytest.approx(local.val_accuracy)
    with torch.no_grad():
        expected = torch.softmax(local.head(torch.from_numpy(features[:20])), dim=1).numpy()
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-4)
    # Held-out accuracy of a head trained on raw public pose features: far above a 3-class guess.
    assert done["val_accuracy"] > 0.5
    heads = httpx.get(cloud.base + "/v1/heads", headers={"X-API-Key": cloud.key}).json()
    assert [h["id"] for h in heads if h["active"]] == [done["head_id"]]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


GOOD = np.zeros((2, 32, 16, 16), np.float32)
NAN = GOOD.copy()
NAN[1, 3, 4, 5] = np.nan
BAD_PREDICT = {
    "no key": (encode_tensors({"features": GOOD}), None, 401),
    "wrong key": (encode_tensors({"features": GOOD}), "esk_wrong", 401),
    "wrong shape": (encode_tensors({"features": np.zeros((2, 32, 8, 8), np.float32)}), "same", 422),
    "no batch axis": (encode_tensors({"features": np.zeros((32, 16, 16), np.float32)}), "same", 422),
    "float64": (encode_tensors({"features": GOOD.astype(np.float64)}), "same", 422),
    "NaN": (encode_tensors({"features": NAN}), "same", 422),
    "empty body": (b"", "same", 400),
    "garbage": (b"\x00\x01garbage" * 10, "same", 400),
    "truncated safetensors": (encode_tensors({"features": GOOD})[:-100], "same", 400),
    "pickled object array": (_npy(np.array([{"x": 1}], dtype=object)), "same", 400),
    "raw pickle": (pickle.dumps(GOOD), "same", 400),
    "wrong tensor name": (encode_tensors({"x": GOOD}), "same", 400),
    "batch too large": (encode_tensors({"features": np.zeros((257, 32, 16, 16), np.float32)}), "same", 422),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT))
def test_bad_predict_requests_are_refused_with_the_right_status(cloud: Cloud, case: str) -> None:
    body, key, status = BAD_PREDICT[case]
    before = cloud.counts()
    response = cloud.post("/v1/predict", body, key=key)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert cloud.counts() == before


def _samples(features: np.ndarray, labels: np.ndarray) -> bytes:
    return encode_tensors({"features": features, "labels": labels})


BAD_COLLECT = {
    "no key": ("ok", _samples(GOOD, np.array([0, 1])), None, 401),
    "labels out of range": ("ok", _samples(GOOD, np.array([0, 3])), "same", 422),
    "negative label": ("ok", _samples(GOOD, np.array([-1, 0])), "same", 422),
    "float labels": ("ok", _samples(GOOD, np.array([0.0, 1.0], np.float32)), "same", 422),
    "label count mismatch": ("ok", _samples(GOOD, np.array([0, 1, 2])), "same", 422),
    "no labels": ("ok", encode_tensors({"features": GOOD}), "same", 400),
    "NaN features": ("ok", _samples(NAN, np.array([0, 1])), "same", 422),
    "npy has no labels": ("ok", _npy(GOOD), "same", 400),
    "bad dataset name": ("../etc", _samples(GOOD, np.array([0, 1])), "same", 404),
    "dataset name with space": ("a b", _samples(GOOD, np.array([0, 1])), "same", 422),
}


@pytest.mark.parametrize("case", list(BAD_COLLECT))
def test_bad_uploads_are_refused_and_store_nothing(cloud: Cloud, case: str) -> None:
    dataset, body, key, status = BAD_COLLECT[case]
    before = cloud.counts()
    response = cloud.post(f"/v1/datasets/{dataset}/samples", body, key=key)
    assert response.status_code == status, response.text
    assert cloud.counts() == before


def test_oversized_bodies_get_413_declared_or_streamed(cloud: Cloud) -> None:
    before = cloud.counts()
    big = np.zeros((600, 32, 16, 16), np.float32)  # 19.7 MB > the 16 MiB default
    assert cloud.post("/v1/predict", encode_tensors({"features": big})).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(20):
            yield b"\0" * (1 << 20)

    streamed = httpx.post(
        cloud.base + "/v1/datasets/big/samples", content=chunks(), headers={"X-API-Key": cloud.key}, timeout=30
    )
    assert streamed.status_code == 413
    model = httpx.post(
        cloud.base + "/v1/models",
        params={"task": "orl-pose"},
        content=chunks(),
        headers={"X-API-Key": cloud.key},
        timeout=30,
    )
    assert model.status_code != 413  # models have their own, larger cap (64 MiB): 20 MiB is refused as non-ONNX
    assert model.status_code == 422
    assert cloud.counts() == before


def test_idempotent_retry_stores_once_and_a_reused_key_for_other_data_is_409(cloud: Cloud) -> None:
    body = _samples(GOOD + 1, np.array([0, 2]))
    headers = {"Idempotency-Key": "batch-0001"}
    first = cloud.post("/v1/datasets/retry/samples", body, headers=headers)
    again = cloud.post("/v1/datasets/retry/samples", body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["batch_id"] == again.json()["batch_id"] and again.json()["replayed"]
    assert cloud.client().dataset("retry")["samples"] == 2
    before = cloud.counts()
    other = cloud.post("/v1/datasets/retry/samples", _samples(GOOD, np.array([1, 1])), headers=headers)
    assert other.status_code == 409
    assert cloud.counts() == before


def test_concurrent_uploads_lose_nothing(cloud: Cloud) -> None:
    before = cloud.store.count_rows("sample_batches")
    n = 16
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            with cloud.client() as client:
                client.upload_samples("concurrent", np.full((3, 32, 16, 16), i, np.float32), np.array([0, 1, 2]))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cloud.store.count_rows("sample_batches") == before + n
    features, labels = cloud.store.load_dataset("concurrent")
    assert len(labels) == 3 * n
    assert sorted({int(v) for v in features[:, 0, 0, 0]}) == list(range(n))


def test_model_upload_is_stored_unverified_and_hostile_files_are_refused(cloud: Cloud) -> None:
    good = linear_classifier_onnx((1, 64, 64), 3)
    with cloud.client() as client:
        record = client.upload_model(good, task="orl-pose", name="pose-linear.onnx")
        assert record["status"] == "unverified" and record["report"] is None
        assert record["summary"]["operators"] == ["Flatten", "Gemm"]
        assert client.model_report(record["id"])["sha256"] == record["sha256"]
        before = cloud.counts()
        hostile = {
            "pickle": pickle.dumps({"weights": GOOD}),
            "truncated": good[: len(good) // 2],
            "empty": b"",
            "wrong task shape": linear_classifier_onnx((1, 28, 28), 10),
        }
        for name, body in hostile.items():
            with pytest.raises(CloudRequestError) as refused:
                client.upload_model(body, task="orl-pose", name=name)
            assert refused.value.status_code == 422, name
        with pytest.raises(CloudRequestError) as unknown_task:
            client.upload_model(good, task="imagenet")
        assert unknown_task.value.status_code == 422
        assert cloud.counts() == before
        with pytest.raises(CloudRequestError) as missing:
            client.model_report(10**6)
        assert missing.value.status_code == 404


def test_a_model_that_needs_more_memory_than_a_check_may_use_is_refused_and_the_server_goes_on(cloud: Cloud) -> None:
    # 8 live tensors of 64 x 448 x 64 x 64 float32 (470 MB each, under the static cap): 3.8 GB in all
    bomb = memory_bomb((1, 64, 64), 3, channels=448, copies=8)
    before = cloud.counts()
    with cloud.client() as client:
        with pytest.raises(CloudRequestError) as refused:
            client.upload_model(bomb, task="orl-pose", name="bomb.onnx")
        assert refused.value.status_code == 422 and "memory limit of 2048 MiB" in str(refused.value)
        assert cloud.counts() == before
        record = client.upload_model(linear_classifier_onnx((1, 64, 64), 3, seed=5), task="orl-pose")
        assert record["status"] == "unverified"
    assert httpx.get(cloud.base + "/health", timeout=10).status_code == 200


def test_training_on_a_missing_dataset_is_404_and_bad_parameters_422(cloud: Cloud) -> None:
    with cloud.client() as client:
        with pytest.raises(CloudRequestError) as missing:
            client.train_head("never-collected")
        assert missing.value.status_code == 404
        with pytest.raises(CloudRequestError) as bad:
            client.train_head("retry", epochs=0)
        assert bad.value.status_code == 422


def test_client_refuses_nan_before_sending_and_reports_an_unreachable_server(cloud: Cloud) -> None:
    with pytest.raises(NonFiniteError):
        cloud.client().predict(NAN)
    with pytest.raises(CloudUnavailableError, match="after 2 attempt"):
        CloudClient("http://127.0.0.1:9", api_key=cloud.key, retries=1, backoff=0.01, timeout=1).version()


def test_craft_cli_uploads_for_prediction_and_for_collection(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faces = tmp_path / "faces"
    assert runner.invoke(app, ["data", "orl-faces", "--split", "private-test", "--out", str(faces)]).exit_code == 0
    for extra in sorted(faces.glob("*.pgm"))[3:]:
        extra.unlink()  # three faces keep the test short
    monkeypatch.setenv("EDGE_SDK_API_KEY", cloud.key)
    out = tmp_path / "crafted.npz"
    result = runner.invoke(app, ["craft", str(faces), "--out", str(out), "--steps", "1", "-q", "--upload", cloud.base])
    assert result.exit_code == 0, result.output
    report = __import__("json").loads(out.with_suffix(".json").read_text())
    answer = report["per_batch"][0]["cloud"]
    assert len(answer["labels"]) == 3 and answer["files"] == sorted(p.name for p in faces.glob("*.pgm"))
    collected = runner.invoke(
        app,
        [
            "craft",
            str(faces),
            "--out",
            str(tmp_path / "c.npz"),
            "--steps",
            "1",
            "-q",
            "--upload",
            cloud.base,
            "--dataset",
            "from-cli",
            "--labels",
            str(faces / "labels.csv"),
        ],
    )
    assert collected.exit_code == 0, collected.output
    assert cloud.client().dataset("from-cli")["samples"] == 3
    refused = runner.invoke(
        app,
        [
            "craft",
            str(faces),
            "--out",
            str(tmp_path / "d.npz"),
            "--steps",
            "1",
            "-q",
            "--upload",
            cloud.base,
            "--api-key",
            "esk_wrong",
        ],
    )
    assert refused.exit_code == 2 and "401" in refused.output


MAPS = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)


def _explanations(maps: np.ndarray = MAPS, predicted: np.ndarray | None = None, **extra: np.ndarray) -> bytes:
    return encode_tensors({"maps": maps, "predicted": np.array([0, 2]) if predicted is None else predicted, **extra})


BAD_EXPLANATIONS = {
    "no key": ("grad", _explanations(), None, 401),
    "maps of another frame": ("grad", _explanations(MAPS[:, :32, :32]), "same", 422),
    "maps without a batch axis": ("grad", _explanations(MAPS[0], np.array([0])), "same", 422),
    "NaN in a map": ("grad", _explanations(np.where(MAPS > 0.99, np.nan, MAPS).astype(np.float32)), "same", 422),
    "float64 maps": ("grad", _explanations(MAPS.astype(np.float64)), "same", 422),
    "class out of range": ("grad", _explanations(predicted=np.array([0, 3])), "same", 422),
    "fewer classes than maps": ("grad", _explanations(predicted=np.array([0])), "same", 422),
    "no predicted classes": ("grad", encode_tensors({"maps": MAPS}), "same", 400),
    "probabilities not summing to 1": (
        "grad",
        _explanations(probabilities=np.full((2, 3), 0.5, np.float32)),
        "same",
        422,
    ),
    "probabilities of other classes": ("grad", _explanations(probabilities=np.eye(2, dtype=np.float32)), "same", 422),
    "batch too large": ("grad", _explanations(np.zeros((257, 64, 64), np.float32), np.zeros(257, int)), "same", 422),
    "method name with a slash": ("grad/../x", _explanations(), "same", 422),
    "raw pickle": ("grad", pickle.dumps(MAPS), "same", 400),
}


@pytest.mark.parametrize("case", list(BAD_EXPLANATIONS))
def test_bad_explanation_uploads_are_refused_and_store_nothing(cloud: Cloud, case: str) -> None:
    method, body, key, status = BAD_EXPLANATIONS[case]
    before = cloud.counts()
    sent = {"X-API-Key": cloud.key if key == "same" else key} if key else {}
    response = httpx.post(
        f"{cloud.base}/v1/datasets/audit/explanations", params={"method": method}, content=body, headers=sent
    )
    assert response.status_code == status, response.text
    assert cloud.counts() == before


def test_explanations_sent_with_predictions_are_stored_once_like_features(cloud: Cloud, kit: Kit) -> None:
    from edge_sdk.explanations import explain

    samples_before = cloud.store.count_rows("sample_batches")
    faces = load_orl("private-test")
    result = explain(kit, faces.images[:5], method="grad-cam")
    with cloud.client() as client:
        first = client.upload_explanations(
            "audit-maps", result.maps, result.predicted, method="grad-cam", probabilities=result.probabilities
        )
        again = client.upload_explanations(
            "audit-maps", result.maps, result.predicted, method="grad-cam", probabilities=result.probabilities
        )
        assert (first["added"], first["total"], again["replayed"], again["batch_id"]) == (5, 5, True, first["batch_id"])
        client.upload_explanations("audit-maps", result.maps[:2], result.predicted[:2], method="grad")
        summary = client.explanations("audit-maps")
        with pytest.raises(CloudRequestError, match="404"):
            client.explanations("nothing-here")
    counts = np.bincount(torch.cat([result.predicted, result.predicted[:2]]).numpy(), minlength=3)
    assert summary["samples"] == 7 and summary["batches"] == 2
    assert summary["methods"] == {"grad": 2, "grad-cam": 5}
    assert summary["label_counts"] == {str(c): int(n) for c, n in enumerate(counts) if n}
    stored = cloud.store.load_explanations("audit-maps")
    np.testing.assert_array_equal(stored["maps"], torch.cat([result.maps, result.maps[:2]]).numpy())
    np.testing.assert_array_equal(stored["predicted"][:5], result.predicted.numpy())
    assert "probabilities" not in stored  # the second batch sent none
    assert stored["method"].tolist() == ["grad-cam"] * 5 + ["grad"] * 2
    # A retry is the same upload only with the same method too.
    body, key = _explanations(), {"X-API-Key": cloud.key, "Idempotency-Key": "maps-0001"}
    url = f"{cloud.base}/v1/datasets/audit-retry/explanations"
    assert httpx.post(url, params={"method": "grad"}, content=body, headers=key).status_code == 201
    assert httpx.post(url, params={"method": "grad"}, content=body, headers=key).json()["replayed"]
    assert httpx.post(url, params={"method": "grad-cam"}, content=body, headers=key).status_code == 409
    assert cloud.store.count_rows("sample_batches") == samples_before  # kept apart from features


def test_explain_cli_uploads_maps_for_audit(cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("captum", reason="Captum is not installed (extra 'explain')")
    faces = tmp_path / "faces"
    assert runner.invoke(app, ["data", "orl-faces", "--split", "private-test", "--out", str(faces)]).exit_code == 0
    for extra in sorted(faces.glob("*.pgm"))[3:]:
        extra.unlink()
    monkeypatch.setenv("EDGE_SDK_API_KEY", cloud.key)
    out = tmp_path / "maps.npz"
    command = ["explain", str(faces), "--out", str(out), "--method", "grad", "-q", "--upload", cloud.base]
    result = runner.invoke(app, [*command, "--dataset", "cli-audit"])
    assert result.exit_code == 0, result.output
    assert "uploaded the maps to dataset 'cli-audit'" in result.output
    written = np.load(out)
    stored = cloud.store.load_explanations("cli-audit")
    np.testing.assert_array_equal(stored["maps"], written["maps"])
    np.testing.assert_array_equal(stored["predicted"], written["predicted"])
    np.testing.assert_allclose(stored["probabilities"], written["probabilities"])
    alone = runner.invoke(app, command)
    assert alone.exit_code == 2 and "--dataset NAME go together" in alone.output


def test_restart_keeps_keys_samples_heads_and_models(cloud: Cloud, tmp_path: Path) -> None:
    """Runs last in this module: a second server on the same database sees everything."""
    with cloud.client() as client:
        summary = client.dataset("pose-public")
        active = client.version()["active_head_id"]
        models = httpx.get(cloud.base + "/v1/models", headers={"X-API-Key": cloud.key}).json()
    with (
        local_server(cloud.database_url, log=tmp_path / "restart.log", extra_args=("--no-verify-uploads",)) as base,
        CloudClient(base, api_key=cloud.key) as client,
    ):
        assert client.dataset("pose-public") == summary
        assert client.version()["active_head_id"] == active
        assert httpx.get(base + "/v1/models", headers={"X-API-Key": cloud.key}).json() == models


def test_an_operator_registers_its_own_data_once_and_uploads_models_for_it(cloud: Cloud) -> None:
    rng = np.random.default_rng(0)
    images = (rng.random((400, 12, 12)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=np.arange(400) % 5)
    registered = cloud.post("/v1/verification-datasets?name=parts.npz", buffer.getvalue())
    assert registered.status_code == 201, registered.text
    dataset = registered.json()
    assert dataset["summary"]["classes"] == 5 and dataset["summary"]["input_shape"] == [1, 12, 12]
    assert (dataset["summary"]["train_images"], dataset["summary"]["heldout_images"]) == (280, 120)
    again = cloud.post("/v1/verification-datasets", buffer.getvalue())
    assert again.json()["id"] == dataset["id"] and again.json()["replayed"]
    listed = httpx.get(cloud.base + "/v1/verification-datasets", headers={"X-API-Key": cloud.key}).json()
    assert [d["id"] for d in listed] == [dataset["id"]]
    pickled = io.BytesIO()
    np.savez(pickled, images=np.array([object()] * 400), labels=np.arange(400))
    refused = cloud.post("/v1/verification-datasets", pickled.getvalue())
    assert refused.status_code == 422 and "would need unpickling" in refused.json()["detail"]
    small = io.BytesIO()
    np.savez(small, images=images[:50], labels=np.arange(50) % 5)
    assert "needs at least" in cloud.post("/v1/verification-datasets", small.getvalue()).json()["detail"]

    model = linear_classifier_onnx((1, 12, 12), 5)
    uploaded = cloud.post(f"/v1/models?dataset={dataset['id']}", model)
    assert uploaded.status_code == 201, uploaded.text
    record = uploaded.json()
    assert record["task"] == f"dataset:{dataset['id']}" and record["summary"]["fine_tune"] == "available"
    assert record["summary"]["conventions"]["layout"] == "channels-first"
    assert cloud.post("/v1/models?dataset=999", model).status_code == 404
    other = create_key(cloud.database_url, "operator-2")
    assert cloud.post(f"/v1/models?dataset={dataset['id']}", model, key=other).status_code == 404
    assert httpx.get(cloud.base + "/v1/verification-datasets", headers={"X-API-Key": other}).json() == []
    both = cloud.post(f"/v1/models?dataset={dataset['id']}&task=orl-pose", model)
    assert both.status_code == 422 and "or a registered verification dataset (dataset=...)" in both.json()["detail"]
    wrong_classes = cloud.post(f"/v1/models?dataset={dataset['id']}", linear_classifier_onnx((1, 12, 12), 3))
    assert wrong_classes.status_code == 422 and "5 classes" in wrong_classes.json()["detail"]


def test_the_server_log_never_holds_a_key(cloud: Cloud) -> None:
    wrong = "esk_" + "x" * 43
    assert cloud.post("/v1/predict", b"\x00" * 16, key=wrong).status_code == 401
    assert cloud.post("/v1/predict", b"\x00" * 16).status_code == 400
    log = cloud.log.read_text()
    assert cloud.key not in log and wrong not in log and "esk_" not in log
