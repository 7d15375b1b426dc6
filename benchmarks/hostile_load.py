"""Hostile-load benchmark of the cloud stub: good traffic keeps its answers while attackers send their worst.

    .venv/bin/python benchmarks/hostile_load.py --out benchmarks/results/hostile_load

Starts ``edge-cloud serve`` (default kit, SQLite, one uvicorn process) with worker
processes capped at ``--job-memory-mib`` and upload checks at ``--check-seconds``.
Good clients (one key each, closed loop) ask ``/v1/predict`` for batches of crafted-
shape features and upload labelled samples with an ``Idempotency-Key``, first alone
(quiet), then while hostile clients send, at the same time:

- fuzzed bodies to ``/v1/predict`` and ``/v1/datasets/NAME/samples``: mutations of valid
  safetensors and ``.npy`` payloads (bit flips, truncation, splices, header edits), the
  fuzzers' corpus and every input a fuzzer ever crashed on (``fuzz/``);
- hostile models to ``/v1/models`` (``cloud_stub.verification.hostile``: memory bombs,
  slow graphs, control flow, too many nodes, size bombs, non-finite outputs, wrong
  class counts, external data, truncated files, pickles);
- requests with wrong, revoked or missing keys, and one key far over its rate.

The server's resident memory (``VmRSS`` of its process, and of its worker processes
separately) is sampled every 0.2 s. Reported: every hostile request's status by kind,
5xx count, good-traffic p50/p99 latency quiet and under attack and their ratio, peak
memory, and whether every accepted sample upload is stored exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

import edge_sdk
from cloud_stub import Store
from cloud_stub.local import local_server
from cloud_stub.verification.hostile import hostile_models
from edge_sdk.client import API_KEY_HEADER, encode_tensors
from edge_sdk.kit import load_kit

ROOT = Path(__file__).resolve().parent.parent
OCTET = {"Content-Type": "application/octet-stream"}


# --- payloads -------------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def fuzzed_bodies(feature_shape: tuple[int, ...], count: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` hostile feature payloads: the fuzz corpus and crashes, then seeded mutations of valid ones."""
    features = rng.normal(size=(2, *feature_shape)).astype(np.float32)
    valid = [
        encode_tensors({"features": features}),
        encode_tensors({"features": features, "labels": np.array([0, 1])}),
        _npy(features),
        _npy(features.astype(">f4")),
    ]
    bodies = [
        p.read_bytes() for folder in ("corpus", "crashes") for p in sorted((ROOT / "fuzz" / folder).glob("payloads/*"))
    ]
    while len(bodies) < count:
        data = bytearray(valid[int(rng.integers(len(valid)))])
        how = int(rng.integers(5))
        if how == 0:  # bit flips anywhere
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 16))):
                data[position] ^= 1 << int(rng.integers(8))
        elif how == 1:  # truncated
            data = data[: int(rng.integers(0, len(data)))]
        elif how == 2:  # the header (first 128 bytes) scrambled
            end = min(128, len(data))
            for position in rng.integers(0, end, size=int(rng.integers(1, 8))):
                data[position] = int(rng.integers(256))
        elif how == 3:  # two valid payloads spliced
            other = valid[int(rng.integers(len(valid)))]
            cut = int(rng.integers(len(data)))
            data = data[:cut] + other[int(rng.integers(len(other))) :]
        else:  # random bytes behind a valid prefix
            data = data[:16] + bytearray(
                rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
            )
        bodies.append(bytes(data))
    return bodies[:count]


# --- memory ----------------------------------------------------------------------------------------


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"cloud_stub" in command and str(port).encode() in command:
                return int(entry.name)
    raise RuntimeError(f"no server process listening on port {port}")


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (the worker pools spawn from their own threads)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


class MemorySampler(threading.Thread):
    """Peak resident memory of the server and of its worker processes, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.server_peak = self.worker_peak = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.server_peak = max(self.server_peak, _rss_mib(self.pid))
            workers = [_rss_mib(child) for child in _children(self.pid)]
            self.worker_peak = max([self.worker_peak, *workers])
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


# --- traffic ---------------------------------------------------------------------------------------


async def good_traffic(
    base: str, keys: list[str], predict_body: bytes, samples_body: bytes, stop: asyncio.Event, *, rate: float
) -> dict[str, Any]:
    """Good clients, each at most ``rate`` requests/s: predictions, and every tenth request a sample upload."""
    latencies: list[float] = []
    wrong: Counter[int] = Counter()
    accepted: set[str] = set()

    async def client(key: str, session: aiohttp.ClientSession) -> None:
        count = 0
        next_start = time.perf_counter()
        while not stop.is_set():
            count += 1
            await asyncio.sleep(max(0.0, next_start - time.perf_counter()))
            started = time.perf_counter()
            next_start = started + 1.0 / rate
            if count % 10 == 0:
                token = uuid.uuid4().hex
                headers = {API_KEY_HEADER: key, "Idempotency-Key": token, **OCTET}
                async with session.post("/v1/datasets/good/samples", data=samples_body, headers=headers) as r:
                    await r.read()
                    if r.status == 201:
                        accepted.add(token)
                    else:
                        wrong[r.status] += 1
                continue
            async with session.post("/v1/predict", data=predict_body, headers={API_KEY_HEADER: key, **OCTET}) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    wrong[r.status] += 1

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base, timeout=timeout) as session:
        await asyncio.gather(*(client(key, session) for key in keys))
    return {"latencies": latencies, "wrong_statuses": dict(wrong), "accepted_uploads": len(accepted)}


async def _send_all(
    session: aiohttp.ClientSession, requests: list[tuple[str, str, bytes, dict[str, str]]], concurrency: int
) -> dict[str, Counter[int]]:
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    queue: asyncio.Queue[tuple[str, str, bytes, dict[str, str]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def sender() -> None:
        while not queue.empty():
            kind, path, body, headers = queue.get_nowait()
            try:
                async with session.post(path, data=body, headers={**OCTET, **headers}) as r:
                    await r.read()
                    statuses[kind][r.status] += 1
            except aiohttp.ClientError:
                statuses[kind][0] += 1  # the connection failed: counted as a failure of the server

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return statuses


async def hostile_traffic(base: str, plan: dict[str, Any]) -> dict[str, dict[int, int]]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(base, timeout=timeout) as session:
        results = await asyncio.gather(
            _send_all(session, plan["bodies"], concurrency=4),
            _send_all(session, plan["models"], concurrency=2),
            _send_all(session, plan["keys"], concurrency=2),
            _send_all(session, plan["flood"], concurrency=32),
        )
    merged: dict[str, dict[int, int]] = {}
    for result in results:
        for kind, counter in result.items():
            merged[kind] = dict(sorted(counter.items()))
    return merged


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


async def run(args: argparse.Namespace, base: str, store: Store, server_pid: int) -> dict[str, Any]:
    kit = load_kit()
    rng = np.random.default_rng(args.seed)
    feature_shape = tuple(kit.feature_shape)
    features = rng.normal(size=(args.batch, *feature_shape)).astype(np.float32)
    predict_body = encode_tensors({"features": features})
    samples_body = encode_tensors({"features": features, "labels": rng.integers(0, 3, size=args.batch)})
    good_keys = [store.create_api_key(f"good-{i}") for i in range(args.clients)]

    stop = asyncio.Event()
    quiet_task = asyncio.create_task(
        good_traffic(base, good_keys, predict_body, samples_body, stop, rate=args.good_rate)
    )
    await asyncio.sleep(args.quiet_seconds)
    stop.set()
    quiet = await quiet_task

    hostile_keys = [store.create_api_key(f"hostile-{i}") for i in range(args.hostile_keys)]
    flood_key = store.create_api_key("flood")
    revoked = store.create_api_key("revoked")
    store.revoke_api_key("revoked")
    bodies = fuzzed_bodies(feature_shape, args.bodies, rng)
    paths = ("/v1/predict", "/v1/datasets/hostile/samples")
    plan = {
        "bodies": [
            ("fuzzed body", paths[i % 2], body, {API_KEY_HEADER: hostile_keys[i % len(hostile_keys)]})
            for i, body in enumerate(bodies)
        ],
        "models": [
            (f"model: {kind}", "/v1/models?task=orl-pose", data, {API_KEY_HEADER: hostile_keys[i % len(hostile_keys)]})
            for i, (kind, data) in enumerate(hostile_models((1, 64, 64), 3, count=args.models, seed=args.seed))
        ],
        "keys": [
            (name, "/v1/predict", predict_body, headers)
            for name, headers in (
                ("wrong key", {API_KEY_HEADER: "esk_" + uuid.uuid4().hex}),
                ("revoked key", {API_KEY_HEADER: revoked}),
                ("no key", {}),
            )
            for _ in range(args.key_requests // 3)
        ],
        "flood": [("key over its rate", "/v1/predict", predict_body, {API_KEY_HEADER: flood_key})] * args.flood,
    }
    stop = asyncio.Event()
    sampler = MemorySampler(server_pid)
    sampler.start()
    attacked_task = asyncio.create_task(
        good_traffic(base, good_keys, predict_body, samples_body, stop, rate=args.good_rate)
    )
    started = time.perf_counter()
    hostile = await hostile_traffic(base, plan)
    hostile_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)
    stop.set()
    attacked = await attacked_task
    sampler.stop()

    stored_batches = store.dataset_summary("good").batches if accepted_any(quiet, attacked) else 0
    accepted = quiet["accepted_uploads"] + attacked["accepted_uploads"]
    five_xx = sum(n for counts in hostile.values() for status, n in counts.items() if status >= 500 or status == 0)
    good_5xx = sum(n for r in (quiet, attacked) for status, n in r["wrong_statuses"].items() if status >= 500)
    quiet_p99, attacked_p99 = _percentile(quiet["latencies"], 99), _percentile(attacked["latencies"], 99)
    return {
        "hostile": hostile,
        "hostile_requests": sum(sum(c.values()) for c in hostile.values()),
        "hostile_5xx_or_dropped": five_xx,
        "hostile_seconds": round(hostile_seconds, 1),
        "good": {
            phase: {
                "requests": len(r["latencies"]),
                "p50_ms": round(_percentile(r["latencies"], 50) * 1000, 1),
                "p99_ms": round(_percentile(r["latencies"], 99) * 1000, 1),
                "refused": r["wrong_statuses"],
                "accepted_uploads": r["accepted_uploads"],
            }
            for phase, r in (("quiet", quiet), ("under attack", attacked))
        },
        "good_5xx": good_5xx,
        "p99_ratio": round(attacked_p99 / quiet_p99, 2),
        "server_peak_rss_mib": round(sampler.server_peak, 1),
        "worker_peak_rss_mib": round(sampler.worker_peak, 1),
        "accepted_sample_uploads": accepted,
        "stored_sample_batches": stored_batches,
    }


def accepted_any(*phases: dict[str, Any]) -> bool:
    return any(phase["accepted_uploads"] for phase in phases)


def _markdown(result: dict[str, Any], settings: dict[str, Any]) -> str:
    good = result["good"]
    lines = [
        "# Hostile load",
        "",
        f"Server: {settings['server_args']}; {settings['clients']} good clients (predict batches of "
        f"{settings['batch']} at {settings['good_rate']} requests/s each, every tenth request a sample upload); "
        f"commit {settings['commit']}, {settings['machine']}.",
        "",
        "| hostile request | answers (status: count) |",
        "|---|---|",
    ]
    for kind, counts in sorted(result["hostile"].items()):
        lines.append(f"| {kind} | {', '.join(f'{s}: {n}' for s, n in counts.items())} |")
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        f"| hostile requests | {result['hostile_requests']} in {result['hostile_seconds']} s |",
        f"| hostile requests answered 5xx or dropped | {result['hostile_5xx_or_dropped']} |",
        f"| good requests answered 5xx | {result['good_5xx']} |",
        f"| good predict p50 / p99, quiet | {good['quiet']['p50_ms']} / {good['quiet']['p99_ms']} ms "
        f"({good['quiet']['requests']} requests) |",
        f"| good predict p50 / p99, under attack | {good['under attack']['p50_ms']} / "
        f"{good['under attack']['p99_ms']} ms ({good['under attack']['requests']} requests) |",
        f"| p99 under attack / quiet | {result['p99_ratio']} |",
        f"| good requests refused | quiet {good['quiet']['refused']}, under attack {good['under attack']['refused']} |",
        f"| server peak resident memory | {result['server_peak_rss_mib']} MiB |",
        f"| worker process peak resident memory | {result['worker_peak_rss_mib']} MiB |",
        f"| good sample uploads accepted / batches stored | {result['accepted_sample_uploads']} / "
        f"{result['stored_sample_batches']} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile_load")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--good-rate", type=float, default=20.0, help="requests/s of each good client")
    parser.add_argument("--quiet-seconds", type=float, default=30.0)
    parser.add_argument("--bodies", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--key-requests", type=int, default=300)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--hostile-keys", type=int, default=40)
    parser.add_argument("--job-memory-mib", type=int, default=2048)
    parser.add_argument("--check-seconds", type=float, default=10.0)
    parser.add_argument("--rate-limit", default="100/second;20000/minute")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    server_args = (
        "--no-verify-uploads",
        "--job-memory-mib",
        str(args.job_memory_mib),
        "--check-seconds",
        str(args.check_seconds),
        "--rate-limit",
        args.rate_limit,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "server.log"  # kept: what the server logged while attacked
    log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'hostile.db'}"
        store = Store(url)
        with local_server(url, log=log, extra_args=server_args) as base:
            pid = _server_pid(int(base.rsplit(":", 1)[1]))
            result = asyncio.run(run(args, base, store, pid))
        store.dispose()
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip()
    settings = {
        "server_args": " ".join(server_args),
        "clients": args.clients,
        "batch": args.batch,
        "good_rate": args.good_rate,
        "bodies": args.bodies,
        "models": args.models,
        "seed": args.seed,
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "version": edge_sdk.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile_load.json").write_text(json.dumps({"settings": settings, **result}, indent=2) + "\n")
    table = _markdown(result, settings)
    (args.out / "hostile_load.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
