"""Audit append throughput with 1, 4 and 16 concurrent writers on JSONL, SQLite and PostgreSQL, in one run.

Writers are separate processes (what proxy replicas are), each with its own store object on the
same log, started once and reused. Per round every writer opens the store, appends a few records
unmeasured, waits for the start signal, then appends its share of ``--records`` (a real guard
decision, its prompt varied per record); throughput is all the round's appends over the time from
the first writer's start to the last writer's end. Each round writes a fresh log, verified
afterwards (an intact chain holding every append, or the benchmark stops). ``--repeat`` rounds per
store and writer count: median and p95 (nearest rank) of appends/s over them, and p50/p95 of the
single append's latency over all of them.

Durability is each store's default: JSONL flushes every record (no fsync), SQLite runs in WAL mode
with synchronous=NORMAL, PostgreSQL (15, started here on a temporary cluster of the local disk
unless ``--postgres URL`` names one) keeps fsync and synchronous commit on.

Prints a table and writes benchmarks/results/audit.json.

    .venv/bin/python -m benchmarks.bench_audit [--records 2000] [--repeat 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from benchmarks.common import summary, write_result
from guardrail.audit import EXIT_OK, open_store, verify
from guardrail.decision import Decision
from guardrail.guard import Guard
from guardrail.scorers.local import LocalScorer

WRITERS = (1, 4, 16)
WARMUP = 5
RESPONSE = (
    "Sure. Wait until the owners leave for work, then force the back door with a crowbar, wear gloves so "
    "you leave no fingerprints, and take the jewellery first because it is easy to sell afterwards."
)
PROMPT = "How can I break into my neighbour's house without being noticed?"
DURABILITY = {
    "jsonl": "every record flushed, no fsync (fsync=True forces it)",
    "sqlite": "WAL, synchronous=NORMAL",
    "postgresql": "server defaults: fsync on, synchronous_commit on",
}


def writer(number: int, decision_json: str, commands: Queue[Any], results: Queue[Any]) -> None:
    """One writer process: per job, open the store, warm up, wait for the go, append, report latencies."""
    decision = Decision.model_validate_json(decision_json)
    while True:
        job = commands.get()
        if job is None:
            return
        target, count = job
        drafts = [decision.model_copy(update={"prompt": f"{PROMPT} ({number}-{i})"}) for i in range(count)]
        with open_store(target) as store:
            for _ in range(WARMUP):
                store.write(decision, deployment="warmup")
            results.put(("ready", number))
            commands.get()  # the go
            latencies = []
            start = time.perf_counter()
            for draft in drafts:
                began = time.perf_counter()
                store.write(draft, deployment=f"writer{number}")
                latencies.append((time.perf_counter() - began) * 1e3)
            end = time.perf_counter()
        results.put(("done", number, start, end, latencies))


class Writers:
    """``WRITERS[-1]`` writer processes, and running one round on the first ``n`` of them."""

    def __init__(self, decision: Decision) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: Queue[Any] = ctx.Queue()
        self.commands: list[Queue[Any]] = [ctx.Queue() for _ in range(max(WRITERS))]
        self.procs = [
            ctx.Process(target=writer, args=(i, decision.model_dump_json(), self.commands[i], self.results))
            for i in range(max(WRITERS))
        ]
        for proc in self.procs:
            proc.start()

    def round(self, target: str, n: int, count: int) -> tuple[float, list[float]]:
        """(appends/s, latencies in ms) of ``n`` writers appending ``count`` records each to ``target``."""
        for i in range(n):
            self.commands[i].put((target, count))
        for _ in range(n):
            self._expect("ready")
        for i in range(n):
            self.commands[i].put("go")
        done = [self._expect("done") for _ in range(n)]
        elapsed = max(d[3] for d in done) - min(d[2] for d in done)
        return n * count / elapsed, [ms for d in done for ms in d[4]]

    def _expect(self, kind: str) -> tuple[Any, ...]:
        message: tuple[Any, ...] = self.results.get(timeout=600)
        if message[0] != kind:
            raise RuntimeError(f"writer said {message!r}, expected {kind}")
        return message

    def close(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for proc in self.procs:
            proc.join(timeout=60)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="appends per round, shared by its writers")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per store and writer count")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of a temporary local server")
    args = parser.parse_args()

    decision = Guard("default", scorer=LocalScorer()).check(RESPONSE, PROMPT)
    server = None
    if args.postgres is None:
        from tests.pg import PgServer

        server = PgServer(durable=True)
        server.start()
        postgres = server.create_database("bench_audit")
    else:
        postgres = args.postgres
    writers = Writers(decision)
    results: dict[str, Any] = {
        "writers_are": "processes, one store object each, on one log",
        "records_per_round": args.records,
        "repeats": args.repeat,
        "record_bytes": len(decision.model_dump_json()),
        "durability": DURABILITY,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],  # the machine may be shared
        "stores": {},
    }
    print(f"{'store':<11}{'writers':>8}{'appends/s p50':>15}{'p95':>9}{'append ms p50':>15}{'p95':>8}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("jsonl", "sqlite", "postgresql"):
                per_kind: dict[str, Any] = {}
                for n in WRITERS:
                    rates: list[float] = []
                    latencies: list[float] = []
                    count = max(1, args.records // n)
                    for r in range(args.repeat):
                        name = f"w{n}-r{r}"
                        target = {
                            "jsonl": str(Path(tmp) / f"{name}.jsonl"),
                            "sqlite": str(Path(tmp) / f"{name}.db"),
                            "postgresql": f"{postgres}{'&' if '?' in postgres else '?'}log={name}",
                        }[kind]
                        rate, ms = writers.round(target, n, count)
                        report = verify(target)
                        if report.exit_code != EXIT_OK or report.checked != n * (count + WARMUP):
                            raise RuntimeError(f"{target}: {report.summary()}")
                        rates.append(rate)
                        latencies += ms
                    per_kind[str(n)] = {
                        "appends_per_s": {"median": round(statistics.median(rates), 1), "p95": round(p95(rates), 1)},
                        "append_latency": summary(latencies),
                        "appends_per_writer": count,
                    }
                    lat = per_kind[str(n)]["append_latency"]
                    rate_stats = per_kind[str(n)]["appends_per_s"]
                    print(
                        f"{kind:<11}{n:>8}{rate_stats['median']:>15.0f}{rate_stats['p95']:>9.0f}"
                        f"{lat['p50_ms']:>15.3f}{lat['p95_ms']:>8.3f}",
                        flush=True,
                    )
                results["stores"][kind] = per_kind
    finally:
        writers.close()
        if server is not None:
            server.close()
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"wrote {write_result('audit', results)}")


if __name__ == "__main__":
    main()
