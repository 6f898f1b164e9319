"""Proxy overhead on loopback: the fake upstream called directly vs through `guardrail serve`.

Both servers run as separate processes (uvicorn), the load comes from this process (httpx,
asyncio). Every upstream answer is distinct, so the proxy scores each one (no cache hits).

- non-stream: p50/p95 latency and sustained throughput at concurrency 1, 16 and 64, with errors;
- stream: time to first content chunk and total time, direct vs proxy, at concurrency 1.

Prints a table and writes benchmarks/results/proxy.json.

    .venv/bin/python benchmarks/bench_proxy.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from benchmarks.common import summary, write_result
from tests.servers import free_port

UPSTREAM = (
    "import sys, uvicorn; from guardrail.integrations.fake_upstream import create_app; "
    "uvicorn.run(create_app(), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', access_log=False)"
)
BODY = {"model": "fake", "messages": [{"role": "user", "content": "Tell me about octopuses."}]}


@contextmanager
def process(args: list[str], url: str) -> Iterator[None]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                httpx.get(url, timeout=1.0)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    detail = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"server did not start: {detail}") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def load(base: str, concurrency: int, total: int) -> dict[str, Any]:
    latencies, elapsed, errors = await measure(base, concurrency, total)
    return {**summary(latencies), "requests_per_s": round(total / elapsed, 1), "errors": errors}


async def measure(base: str, concurrency: int, total: int) -> tuple[list[float], float, int]:
    """(latencies in ms, seconds for all, non-200 answers) of ``total`` chat requests, ``concurrency`` at a time."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                response = await client.post("/chat/completions", json=BODY)
                latencies.append((time.perf_counter() - start) * 1e3)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


async def stream_timing(base: str, runs: int) -> dict[str, Any]:
    first: list[float] = []
    whole: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        for _ in range(runs):
            start = time.perf_counter()
            seen = False
            async with client.stream("POST", "/chat/completions", json={**BODY, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if not seen and line.startswith("data:") and '"content"' in line:
                        first.append((time.perf_counter() - start) * 1e3)
                        seen = True
            whole.append((time.perf_counter() - start) * 1e3)
    return {"first_chunk": summary(first), "total": summary(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level (x2 at 64)")
    parser.add_argument("--stream-runs", type=int, default=40)
    args = parser.parse_args()

    up_port, proxy_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    proxy = f"http://127.0.0.1:{proxy_port}/v1"
    serve = [sys.executable, "-m", "guardrail.cli", "serve", "--upstream", upstream, "--port", str(proxy_port)]
    results: dict[str, Any] = {"non_stream": {}, "stream": {}}
    with (
        process([sys.executable, "-c", UPSTREAM, str(up_port)], f"http://127.0.0.1:{up_port}/"),
        process(serve, f"http://127.0.0.1:{proxy_port}/healthz"),
    ):
        asyncio.run(load(proxy, 4, 20))  # warm both servers
        for concurrency in (1, 16, 64):
            total = args.requests * (2 if concurrency == 64 else 1)
            direct = asyncio.run(load(upstream, concurrency, total))
            guarded = asyncio.run(load(proxy, concurrency, total))
            row = {"direct": direct, "proxy": guarded, "added_p50_ms": round(guarded["p50_ms"] - direct["p50_ms"], 3)}
            results["non_stream"][f"concurrency_{concurrency}"] = row
            print(
                f"concurrency {concurrency:>2}: direct p50 {direct['p50_ms']:.2f} ms p95 {direct['p95_ms']:.2f} ms "
                f"{direct['requests_per_s']:>7.1f} req/s | proxy p50 {guarded['p50_ms']:.2f} ms p95 "
                f"{guarded['p95_ms']:.2f} ms {guarded['requests_per_s']:>6.1f} req/s, {guarded['errors']} errors",
                flush=True,
            )
        for name, base in (("direct", upstream), ("proxy", proxy)):
            results["stream"][name] = asyncio.run(stream_timing(base, args.stream_runs))
        d, p = results["stream"]["direct"], results["stream"]["proxy"]
        print(
            f"stream: first chunk p50 direct {d['first_chunk']['p50_ms']:.2f} ms, "
            f"proxy {p['first_chunk']['p50_ms']:.2f} ms;"
            f" total p50 direct {d['total']['p50_ms']:.2f} ms, proxy {p['total']['p50_ms']:.2f} ms"
        )
    print(f"wrote {write_result('proxy', results)}")


if __name__ == "__main__":
    main()
