"""Load benchmark of the cloud stub's predict endpoint on loopback.

    .venv/bin/python benchmarks/cloud_predict.py --out benchmarks/results/cloud_predict.json

Starts ``edge-cloud serve`` (default kit, SQLite, one uvicorn process, torch 1
thread) in a child process, then for each batch size and number of concurrent
clients runs an asyncio load generator (aiohttp, one connection per client) that sends
safetensors feature payloads of the default kit's shape (32x16x16 float32, 32 KiB
per feature) for ``--duration`` seconds after a warm-up. Reports requests/s,
features/s, p50/p90/p99 latency and errors. Client and server share the machine's
cores, as they would on a one-box deployment. (aiohttp rather than httpx: httpx's
async connection pool itself saturated near 80 requests/s at 64 clients here.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

import edge_sdk
from cloud_stub import Store
from cloud_stub.local import local_server
from edge_sdk.client import API_KEY_HEADER, encode_tensors


async def load(base: str, key: str, body: bytes, *, clients: int, duration: float, warmup: float) -> dict[str, Any]:
    """Closed-loop load: ``clients`` workers each send the next request when the last one returns."""
    latencies: list[float] = []
    errors = 0
    headers = {API_KEY_HEADER: key, "Content-Type": "application/octet-stream"}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector, timeout=timeout) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + duration

        async def worker() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop:
                async with client.post("/v1/predict", data=body) as response:
                    await response.read()
                done = time.perf_counter()
                if now >= measure_from:
                    if response.status == 200:
                        latencies.append(done - now)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    quantiles = np.percentile(np.array(latencies) * 1000, [50, 90, 99]) if latencies else [float("nan")] * 3
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / duration,
        "p50_ms": float(quantiles[0]),
        "p90_ms": float(quantiles[1]),
        "p99_ms": float(quantiles[2]),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cloud_predict.json"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds per configuration.")
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = Store(url)
        key = store.create_api_key("benchmark")
        store.dispose()
        with local_server(url, log=Path(tmp) / "server.log") as base:
            rng = np.random.default_rng(0)
            for batch in args.batch:
                body = encode_tensors({"features": rng.normal(size=(batch, 32, 16, 16)).astype(np.float32)})
                for clients in args.clients:
                    result = asyncio.run(
                        load(base, key, body, clients=clients, duration=args.duration, warmup=args.warmup)
                    )
                    row = {
                        "batch": batch,
                        "clients": clients,
                        "payload_bytes": len(body),
                        **result,
                        "features_per_s": result["requests_per_s"] * batch,
                    }
                    rows.append(row)
                    print(
                        f"batch {batch:3d}  clients {clients:3d}  {row['requests_per_s']:8.1f} req/s  "
                        f"{row['features_per_s']:8.1f} features/s  p50 {row['p50_ms']:7.2f} ms  "
                        f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}",
                        flush=True,
                    )
    print()
    print("| batch | clients | requests/s | features/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['clients']} | {r['requests_per_s']:.1f} | {r['features_per_s']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    report = {
        "benchmark": "cloud_predict",
        "setup": {
            "server": "edge-cloud serve, one uvicorn process, torch 1 thread, SQLite, default kit",
            "load": "closed loop, aiohttp, one keep-alive connection per client, loopback",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "edge_sdk": edge_sdk.__version__,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
