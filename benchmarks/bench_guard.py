"""Guard and audit overhead, measured in one run.

- guard overhead per call at batch 1 (score + evaluate + decide; no LLM), p50/p95, next to
  scoring alone with the same uncached scorer;
- the cost of evaluating a 20-rule policy, as a share of scoring time;
- audit append throughput (records/s) for the JSONL and SQLite sinks;
- added latency per guarded call with auditing on vs off.

Prints a table and writes benchmarks/results/guard.json.

    .venv/bin/python benchmarks/bench_guard.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import summary, timings_ms, write_result
from guardrail.audit import JsonlSink, SqliteSink
from guardrail.evaluate import evaluate
from guardrail.guard import Guard
from guardrail.policy import policy_from_dict
from guardrail.record import DecisionSink
from guardrail.scorers.local import LocalScorer
from guardrail.values import VALUE_NAMES

RESPONSE = (
    "Sure. Wait until the owners leave for work, then force the back door with a crowbar, wear gloves so "
    "you leave no fingerprints, and take the jewellery first because it is easy to sell afterwards."
)
PROMPT = "How can I break into my neighbour's house without being noticed?"


def twenty_rule_policy() -> Any:
    """A policy with 20 rules of every condition kind, extending the default preset (5 rules)."""
    rules: list[dict[str, Any]] = []
    for i, value in enumerate(VALUE_NAMES):
        rules.append(
            {
                "id": f"range-{value}",
                "when": {"value": value, "min": -0.5, "max": 0.99},
                "action": "log",
                "reason": f"range on {value}",
            }
        )
        if i < 4:
            rules.append(
                {
                    "id": f"uncertain-{value}",
                    "when": {"uncertain": value, "below": 0.2},
                    "action": "log",
                    "reason": "uncertain",
                }
            )
    rules.append({"id": "group", "when": {"group": "self_transcendence", "min": -0.3}, "action": "log", "reason": "g"})
    rules.append(
        {
            "id": "target",
            "when": {"target": {"security": 1, "benevolence": 1}, "max_distance": 1.5},
            "action": "log",
            "reason": "t",
        }
    )
    return policy_from_dict({"name": "twenty", "extends": "default", "rules": rules[:15]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--records", type=int, default=2000, help="records per sink throughput run")
    args = parser.parse_args()

    scorer = LocalScorer(cache_size=0)
    policy = twenty_rule_policy()
    assert len(policy.rules) == 20, len(policy.rules)
    guard = Guard(policy, scorer=scorer)
    results: dict[str, Any] = {"model_id": scorer.model_id, "rules": len(policy.rules)}

    # Scoring alone vs the whole guarded check, interleaved so that noise hits both alike.
    score_ms: list[float] = []
    check_ms: list[float] = []
    for _ in range(4):
        score_ms += timings_ms(partial(scorer.score, RESPONSE, PROMPT), args.repeat // 4)
        check_ms += timings_ms(partial(guard.check, RESPONSE, PROMPT), args.repeat // 4)
    scores = scorer.score(RESPONSE, PROMPT)
    eval_ms = timings_ms(partial(evaluate, scores, policy), args.repeat * 5)
    results["score_only"] = summary(score_ms)
    results["guard_check"] = summary(check_ms)
    results["evaluate_20_rules"] = summary(eval_ms)
    results["guard_overhead_p50_ms"] = round(results["guard_check"]["p50_ms"] - results["score_only"]["p50_ms"], 4)
    results["evaluate_share_of_scoring"] = round(
        results["evaluate_20_rules"]["p50_ms"] / results["score_only"]["p50_ms"], 4
    )
    print(
        f"scoring alone      p50 {results['score_only']['p50_ms']:.2f} ms  p95 {results['score_only']['p95_ms']:.2f} ms"
    )
    print(
        f"guard.check        p50 {results['guard_check']['p50_ms']:.2f} ms  "
        f"p95 {results['guard_check']['p95_ms']:.2f} ms  (overhead p50 {results['guard_overhead_p50_ms']:.3f} ms)"
    )
    print(
        f"evaluate 20 rules  p50 {results['evaluate_20_rules']['p50_ms'] * 1000:.1f} us = "
        f"{results['evaluate_share_of_scoring']:.2%} of scoring"
    )

    decision = guard.check(RESPONSE, PROMPT)
    with tempfile.TemporaryDirectory() as tmp:
        sinks: dict[str, DecisionSink] = {
            "jsonl": JsonlSink(Path(tmp) / "a.jsonl"),
            "sqlite": SqliteSink(Path(tmp) / "a.db"),
        }
        throughput = {}
        for name, sink in sinks.items():
            start = time.perf_counter()
            for _ in range(args.records):
                sink.write(decision, deployment="bench")
            elapsed = time.perf_counter() - start
            throughput[name] = round(args.records / elapsed, 1)
            print(f"audit append {name:<6} {throughput[name]:>9.1f} records/s")
        results["audit_records_per_s"] = throughput

        # Guarded calls with a cached scorer, so that the audit write is a visible share.
        cached = LocalScorer()
        off = Guard(policy, scorer=cached)
        on = Guard(policy, scorer=cached, audit=JsonlSink(Path(tmp) / "on.jsonl"))
        cached.score(RESPONSE, PROMPT)
        texts = itertools.cycle([RESPONSE])
        off_ms: list[float] = []
        on_ms: list[float] = []
        for _ in range(4):
            off_ms += timings_ms(lambda: off.check(next(texts), PROMPT), args.repeat // 4)
            on_ms += timings_ms(lambda: on.check(next(texts), PROMPT), args.repeat // 4)
        results["guard_cached_audit_off"] = summary(off_ms)
        results["guard_cached_audit_on"] = summary(on_ms)
        added = results["guard_cached_audit_on"]["p50_ms"] - results["guard_cached_audit_off"]["p50_ms"]
        results["audit_added_p50_ms"] = round(added, 4)
        print(
            f"guarded call (score cached) audit off p50 {results['guard_cached_audit_off']['p50_ms']:.3f} ms, "
            f"on p50 {results['guard_cached_audit_on']['p50_ms']:.3f} ms: +{added:.3f} ms per call"
        )
        for sink in sinks.values():
            sink.close()
        on.close()
    print(f"wrote {write_result('guard', results)}")


if __name__ == "__main__":
    main()
