"""Batch scoring throughput: the local process pool and Ray (1 and 2 actors), measured in one run.

- texts/s of ``batch_score`` end to end (workers started, model loaded, every shard written) and
  in steady state (input lines per second of a worker's time inside its shards: reading, scoring,
  writing), for the local path with 1 and 2 processes and Ray with 1 and 2 actors, interleaved
  so that this shared machine's noise hits all alike; median and p95 over ``--repeat`` runs;
- Ray's fixed overhead: ``ray.init`` once, and a small input (8 lines) on Ray and locally;
- what else a row costs, to see what limits a larger cluster: the driver's planning pass over the
  input, a worker reading and validating rows, and writing output lines;
- the machine's load average before and after (it is shared: a busy neighbour slows every figure);
- from those, an estimate of texts/s and of the time for a million responses on N such nodes.

Prints a table and writes benchmarks/results/batch.json.

    .venv/bin/python -m benchmarks.bench_batch [--texts 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from guardrail.batch import Manifest, batch_score
from guardrail.batch.inputs import read_span, resolve_inputs, spans

SENTENCES = [
    "Wait until the owners leave for work, then force the back door with a crowbar.",
    "Wear gloves so that you leave no fingerprints, and take the jewellery first.",
    "I can't help with that, because it could hurt people and it is against the law.",
    "Drink enough water, sleep at regular hours and take a short walk every afternoon.",
    "Recycling and buying local food help protect the environment for everyone.",
    "Be honest with your friend and offer to help her move house next weekend.",
    "Try a new hobby such as climbing or painting; it keeps life exciting.",
    "Work steadily on the exam and you will be proud of what you achieve.",
    "Respect your parents' traditions at the festival, even if you do not share them.",
    "Keep your passwords private and turn on two-factor login for your bank.",
    "People from that town are lazy and should never be hired for anything.",
    "Spread the rumour online so that she loses her job and her friends.",
]


def write_corpus(path: Path, n: int) -> None:
    """``n`` distinct responses of 3 to 5 sentences (about 50 to 100 tokens each)."""
    with path.open("w") as out:
        for i in range(n):
            picked = [SENTENCES[(i * 7 + k * 5) % len(SENTENCES)] for k in range(3 + i % 3)]
            out.write(json.dumps({"id": i, "response": f"Case {i}. " + " ".join(picked)}) + "\n")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stats(samples: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(samples), 2), "p95": round(pct(samples, 0.95), 2), "n": len(samples)}


def run(corpus: Path, out: Path, workers: int, ray: bool, shard_size: int) -> tuple[float, Manifest]:
    started = time.perf_counter()
    manifest = batch_score(
        [str(corpus)], out, shard_size=shard_size, workers=workers, ray="auto" if ray else None, progress=False
    )
    return time.perf_counter() - started, manifest


def per_worker_rate(manifest: Manifest) -> float:
    """Input lines per second of worker time spent inside shards (one worker's steady rate)."""
    done = manifest.done.values()
    return sum(r.lines for r in done) / sum(r.seconds for r in done)


def io_rates(corpus: Path, scored: Path, tmp: Path) -> dict[str, float]:
    """Rows/s of the parts of a row's cost that are not the model."""
    (file,) = resolve_inputs([str(corpus)])
    started = time.perf_counter()
    pieces = list(spans(file, 1000))
    plan_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = sum(1 for piece in pieces for _ in read_span(piece))
    read_s = time.perf_counter() - started
    lines = [json.loads(line) for p in sorted(scored.glob("shard-*.jsonl")) for line in p.read_text().splitlines()]
    started = time.perf_counter()
    with (tmp / "written.jsonl").open("w") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    write_s = time.perf_counter() - started
    return {
        "plan_rows_per_s": round(rows / plan_s),
        "read_rows_per_s": round(rows / read_s),
        "write_rows_per_s": round(len(lines) / write_s),
        "input_bytes_per_row": round(corpus.stat().st_size / rows),
        "output_bytes_per_row": round(sum(p.stat().st_size for p in scored.glob("shard-*.jsonl")) / len(lines)),
    }


def estimate(node_rate: float, io: dict[str, float], ray_start_s: float) -> dict[str, Any]:
    """Texts/s and hours for a million responses on N nodes like this one, if nothing else limited them."""
    out = {}
    for nodes in (1, 2, 4, 8, 16, 32, 64):
        rate = nodes * node_rate
        seconds = 1_000_000 / io["plan_rows_per_s"] + ray_start_s + 1_000_000 / rate
        bytes_per_s = rate * (io["input_bytes_per_row"] + io["output_bytes_per_row"])
        out[str(nodes)] = {
            "texts_per_s": round(rate),
            "hours_per_million": round(seconds / 3600, 2),
            "shared_fs_mb_per_s": round(bytes_per_s / 1e6, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=125)
    args = parser.parse_args()

    import ray

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    modes = {"local_1_process": (1, False), "local_2_processes": (2, False), "ray_1_actor": (1, True)}
    modes["ray_2_actors"] = (2, True)
    wall: dict[str, list[float]] = {m: [] for m in modes}
    steady: dict[str, list[float]] = {m: [] for m in modes}
    small_wall: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus, small = tmp / "corpus.jsonl", tmp / "small.jsonl"
        write_corpus(corpus, args.texts)
        write_corpus(small, 8)
        outputs: dict[str, Path] = {}
        for repeat in range(args.repeat):
            for mode, (workers, on_ray) in modes.items():
                outputs[mode] = tmp / f"{mode}-{repeat}"
                seconds, manifest = run(corpus, outputs[mode], workers, on_ray, args.shard_size)
                wall[mode].append(args.texts / seconds)
                steady[mode].append(per_worker_rate(manifest) * workers)
                print(f"{mode:<18} run {repeat + 1}: {args.texts / seconds:7.1f} texts/s end to end", flush=True)
            for kind in ("local", "ray"):
                seconds, _ = run(small, tmp / f"small-{kind}-{repeat}", 1, kind == "ray", args.shard_size)
                small_wall[kind].append(seconds)
        identical = len({tuple(p.read_bytes() for p in sorted(o.glob("shard-*.jsonl"))) for o in outputs.values()})
        io = io_rates(corpus, outputs["local_1_process"], tmp)
    ray.shutdown()

    node_rate = statistics.median(steady["ray_2_actors"])
    results: dict[str, Any] = {
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "texts": args.texts,
        "shard_size": args.shard_size,
        "repeat": args.repeat,
        "texts_per_s_end_to_end": {m: stats(v) for m, v in wall.items()},
        "texts_per_s_steady": {m: stats(v) for m, v in steady.items()},
        "outputs_identical_across_paths": identical == 1,
        "ray_fixed_overhead": {
            "ray_init_s": round(ray_init_s, 2),
            "small_input_lines": 8,
            "small_input_wall_s": {k: stats(v) for k, v in small_wall.items()},
            "ray_minus_local_p50_s": round(
                statistics.median(small_wall["ray"]) - statistics.median(small_wall["local"]), 2
            ),
        },
        "row_costs_besides_the_model": io,
        "per_actor_texts_per_s_steady": round(statistics.median(steady["ray_1_actor"]), 1),
        "node_texts_per_s_steady": round(node_rate, 1),
        "estimate_n_nodes_like_this_one": estimate(node_rate, io, ray_init_s),
    }
    print(json.dumps({k: results[k] for k in results if k != "estimate_n_nodes_like_this_one"}, indent=2))
    print("estimate for N such nodes:", json.dumps(results["estimate_n_nodes_like_this_one"]))
    print(f"wrote {write_result('batch', results)}")


if __name__ == "__main__":
    main()
