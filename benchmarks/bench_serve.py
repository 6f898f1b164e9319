"""`guardrail serve` at scale, in one run against one fake upstream (a separate uvicorn process):

- throughput and p50/p95 latency at concurrency 16 and 64 with 1 and with 2 worker processes
  (`--workers N`, metrics on, as operators run it);
- the cost of metrics on the hot path: 1 worker with `--metrics` vs `--no-metrics`;
- what a Prometheus scrape of /metrics takes (2 workers: the multi-process collector reads every
  worker's files).

Every server runs the whole time; the rounds go through the configurations in turn, so that the
other helpers' load on the shared machine falls on all of them alike. Latencies are pooled over
the rounds (p50/p95); throughput is the median of the rounds. Every upstream answer is distinct,
so each response is scored (no cache hits). The load generator, the upstream and the workers
share this machine's cores: N = 2 can only scale as far as idle cores allow (see `cpus`).

Prints a table and writes benchmarks/results/serve.json.

    .venv/bin/python -m benchmarks.bench_serve [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx

from benchmarks.bench_proxy import UPSTREAM, measure, process
from benchmarks.common import summary, write_result
from tests.servers import free_port

CONFIGS = {"workers_1": (1, True), "workers_1_no_metrics": (1, False), "workers_2": (2, True)}
CONCURRENCY = (16, 64)


def wait_ready(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url, timeout=5.0).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became ready")
        time.sleep(0.2)


def scrape_ms(url: str, runs: int) -> dict[str, float]:
    times = []
    with httpx.Client(timeout=10.0) as client:
        for _ in range(runs):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            times.append((time.perf_counter() - start) * 1e3)
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per round at concurrency 16 (x2 at 64)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    ports = {name: free_port() for name in CONFIGS}
    with ExitStack() as stack:
        stack.enter_context(process([sys.executable, "-c", UPSTREAM, str(up_port)], f"http://127.0.0.1:{up_port}/"))
        for name, (workers, with_metrics) in CONFIGS.items():
            serve = [sys.executable, "-m", "guardrail.cli", "serve", "--upstream", upstream]
            serve += ["--port", str(ports[name]), "--workers", str(workers)]
            serve += [] if with_metrics else ["--no-metrics"]
            stack.enter_context(process(serve, f"http://127.0.0.1:{ports[name]}/healthz"))
            wait_ready(f"http://127.0.0.1:{ports[name]}/readyz")
        for name in CONFIGS:  # warm every worker
            asyncio.run(measure(f"http://127.0.0.1:{ports[name]}/v1", 8, 40))

        pooled: dict[tuple[str, int], list[float]] = {}
        rates: dict[tuple[str, int], list[float]] = {}
        errors: dict[tuple[str, int], int] = {}
        for round_ in range(args.rounds):
            for concurrency in CONCURRENCY:
                total = args.requests * (2 if concurrency == 64 else 1)
                for name in CONFIGS:
                    key = (name, concurrency)
                    latencies, elapsed, failed = asyncio.run(
                        measure(f"http://127.0.0.1:{ports[name]}/v1", concurrency, total)
                    )
                    pooled.setdefault(key, []).extend(latencies)
                    rates.setdefault(key, []).append(total / elapsed)
                    errors[key] = errors.get(key, 0) + failed
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        scrape = scrape_ms(f"http://127.0.0.1:{ports['workers_2']}/metrics", 50)

    results: dict[str, Any] = {"rounds": args.rounds, "requests_per_round": args.requests, "load": {}}
    for (name, concurrency), latencies in pooled.items():
        row = {
            **summary(latencies),
            "requests_per_s": round(statistics.median(rates[(name, concurrency)]), 1),
            "requests_per_s_rounds": [round(r, 1) for r in rates[(name, concurrency)]],
            "errors": errors[(name, concurrency)],
        }
        results["load"].setdefault(f"concurrency_{concurrency}", {})[name] = row
        print(
            f"concurrency {concurrency:>2} {name:<21} p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
            f"{row['requests_per_s']:6.1f} req/s  ({row['errors']} errors)"
        )
    for concurrency in CONCURRENCY:
        level = results["load"][f"concurrency_{concurrency}"]
        on, off = level["workers_1"], level["workers_1_no_metrics"]
        level["metrics_cost"] = {
            "added_p50_ms": round(on["p50_ms"] - off["p50_ms"], 2),
            "throughput_change_pct": round(100 * (on["requests_per_s"] / off["requests_per_s"] - 1), 1),
        }
        level["workers_2_speedup"] = round(level["workers_2"]["requests_per_s"] / on["requests_per_s"], 2)
        print(
            f"concurrency {concurrency}: metrics cost {level['metrics_cost']}, 2 workers x{level['workers_2_speedup']}"
        )
    results["metrics_scrape_2_workers"] = scrape
    print(f"/metrics scrape (2 workers): p50 {scrape['p50_ms']:.2f} ms, p95 {scrape['p95_ms']:.2f} ms")
    print(f"wrote {write_result('serve', results)}")


if __name__ == "__main__":
    main()
