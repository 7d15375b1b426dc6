"""The cloud stub on Ray Serve: two replicas on one database behave as one service."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cloud_stub import ServerSettings, Store
from cloud_stub.local import free_port
from edge_sdk.client import CloudClient

serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (extra 'ray')")
ray = pytest.importorskip("ray")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_app_builder_reads_settings_and_refuses_unknown_keys(tmp_path: Path) -> None:
    from cloud_stub.ray_serve import app_builder

    application = app_builder({"database_url": f"sqlite:///{tmp_path / 'a.db'}", "max_batch": "8", "num_replicas": "1"})
    assert type(application).__name__ == "Application"
    with pytest.raises(ValueError, match=r"databse_url\n.*Extra inputs are not permitted"):
        app_builder({"databse_url": "sqlite:///x.db"})


@pytest.mark.slow
def test_two_replicas_share_uploads_jobs_and_the_trained_head(tmp_path: Path) -> None:
    from cloud_stub.ray_serve import build_deployment

    url = f"sqlite:///{tmp_path / 'ray.db'}"
    key = Store(url).create_api_key("device")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_deployment(ServerSettings(database_url=url), num_replicas=2, cpus_per_replica=0.5), route_prefix="/"
        )
        with CloudClient(f"http://127.0.0.1:{port}", api_key=key, timeout=60) as client:
            assert client.version()["active_head_id"] == 1
            features = np.random.default_rng(0).normal(size=(30, 32, 16, 16)).astype(np.float32)
            for i in range(3):  # requests spread over both replicas
                client.upload_samples("d", features[10 * i : 10 * (i + 1)], np.arange(10) % 3)
            job = client.wait_for_job(client.train_head("d", epochs=2)["id"], timeout=120)
            assert job["status"] == "succeeded"
            time.sleep(1.2)  # both replicas follow the store's active head within a second
            answers = {client.predict(features[:2]).head_id for _ in range(20)}
            assert answers == {job["head_id"]}
    finally:
        serve.shutdown()
        ray.shutdown()
    store = Store(url)
    assert store.count_rows("heads") == 2  # the kit's head once (replicas raced to store it), the trained one
    assert store.count_rows("sample_batches") == 3 and store.count_rows("training_jobs") == 1
