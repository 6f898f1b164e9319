"""What metrics and tracing add to a guarded call (``Guard.check``), in one run.

The scorer's cache is on and every call checks the same text, so a call is the pipeline alone
(cache lookup, evaluate, act, record without a sink): the hooks' cost is not hidden behind a
forward pass. Configurations, measured in turn over several rounds:

- ``off``: no metrics, no tracer provider (what a user gets by default: each hook returns at once);
- ``metrics``: ``guardrail.metrics.enable()``;
- ``tracing``: the OpenTelemetry SDK set up with a span processor that exports to memory;
- ``both``.

Also the cost of the no-op hooks without a provider: a guarded call's (``tracing.active()``, which
asks the API for the provider; twice per call) and a step's (a look at the current span; three
times per call). Prints a table and
writes benchmarks/results/observability.json.

    .venv/bin/python -m benchmarks.bench_observability [--repeat 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.common import summary, timings_ms, write_result
from guardrail import metrics, tracing
from guardrail.guard import Guard
from guardrail.scorers.local import LocalScorer

TEXT = "Octopuses have three hearts and blue blood."
CONFIGS = ("off", "metrics", "tracing", "both")


class Switch:
    """Turns metrics and tracing on and off between measurements (one provider, swapped in and out)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def set(self, config: str) -> None:
        metrics.enable() if config in ("metrics", "both") else metrics.disable()
        # The API sets a provider once per process: swap the global directly (benchmark only).
        trace._TRACER_PROVIDER = self.provider if config in ("tracing", "both") else None
        self.exporter.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000, help="calls per configuration and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    guard = Guard("default", scorer=LocalScorer(), deployment="bench")
    switch = Switch()
    samples: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            switch.set(config)
            samples[config] += timings_ms(lambda: guard.check(TEXT), args.repeat, warmup=50)
    switch.set("tracing")
    guard.check(TEXT)
    spans_per_call = len(switch.exporter.get_finished_spans())
    switch.set("off")
    noop_ns = min(timeit.repeat(tracing.active, number=100_000, repeat=5)) / 100_000 * 1e9
    step_ns = min(timeit.repeat(tracing._step_tracer, number=100_000, repeat=5)) / 100_000 * 1e9

    results: dict[str, Any] = {"repeat": args.repeat, "rounds": args.rounds, "calls": {}}
    base = summary(samples["off"])
    for config in CONFIGS:
        row: dict[str, Any] = summary(samples[config])
        row["added_p50_us"] = round((row["p50_ms"] - base["p50_ms"]) * 1e3, 1)
        results["calls"][config] = row
        print(
            f"{config:<8} p50 {row['p50_ms'] * 1e3:7.1f} us  p95 {row['p95_ms'] * 1e3:7.1f} us  "
            f"added p50 {row['added_p50_us']:+6.1f} us"
        )
    results["spans_per_call"] = spans_per_call
    results["noop_hook_ns"] = {"call_or_record": round(noop_ns, 1), "step": round(step_ns, 1)}
    print(
        f"{spans_per_call} spans per traced call; hooks without a tracer provider: {noop_ns:.0f} ns "
        f"(call, record), {step_ns:.0f} ns (score, evaluate, act)"
    )
    print(f"wrote {write_result('observability', results)}")


if __name__ == "__main__":
    main()
