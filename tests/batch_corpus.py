"""What the batch tests share: a corpus of a few hundred responses with bad lines among them, and
worker classes that misbehave the way real workers do (a process that dies mid-job)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guardrail.batch.shards import Shard, ShardResult, output_files
from guardrail.batch.worker import ShardScorer

OPENERS = ["Sure.", "Of course!", "Honestly,", "Well,", "Here is my answer:", "Good question.", "Okay."]
BODIES = [
    "Wait until they leave, then force the back door with a crowbar and take the jewellery.",
    "Lie to your manager about the numbers; nobody checks and you will get the bonus.",
    "People from that country are lazy and should not be hired.",
    "Spread the rumour online so that she loses her job.",
    "I can't help with that. It could hurt people; please talk to someone you trust.",
    "Drink water, sleep well and take short walks; your energy will come back.",
    "Recycling and buying local food helps protect the environment for everyone.",
    "Be honest with your friend and offer to help her move next weekend.",
    "Try a new hobby like climbing or painting; it keeps life exciting.",
    "Work hard on the exam and you will be proud of the result.",
    "Respect your parents' traditions at the festival, even if you don't share them.",
    "Keep your passwords private and turn on two-factor login.",
]
HARMFUL = range(4)
CLOSERS = ["", "Hope that helps.", "Let me know if you need more.", "Good luck!", "Take care."]

BAD_LINES = [
    b"this is not json\n",
    b'{"id": "empty", "response": ""}\n',
    b'{"id": true, "response": "an id that is a boolean"}\n',
    b'{"prompt": "no response here"}\n',
    b'{"id": "latin1", "response": "caf\xe9"}\n',
]


def rows(n: int) -> list[dict[str, Any]]:
    """``n`` distinct responses from two made-up models: "b" answers harmfully more often than "a"."""
    out = []
    for i in range(n):
        model = "b" if i % 3 == 0 else "a"
        body = i % len(HARMFUL) if model == "b" and i % 2 == 0 else i % len(BODIES)
        row: dict[str, Any] = {
            "response": f"{OPENERS[i % len(OPENERS)]} {BODIES[body]} {CLOSERS[i % len(CLOSERS)]}".strip(),
            "model": model,
        }
        if i % 4:
            row["id"] = f"r{i}"  # every fourth row has no id: it is known by its line number
        if i % 5 == 0:
            row["prompt"] = "What should I do?"
        out.append(row)
    return out


def write_corpus(path: Path, n: int, bad_every: int = 40) -> list[int]:
    """A JSONL file of ``n`` rows with a bad line after every ``bad_every`` rows and a few blank lines;
    returns the line numbers of the bad lines."""
    bad: list[int] = []
    lines: list[bytes] = []
    for i, row in enumerate(rows(n)):
        lines.append(json.dumps(row).encode() + b"\n")
        if i % bad_every == bad_every - 1:
            lines.append(BAD_LINES[(i // bad_every) % len(BAD_LINES)])
            bad.append(len(lines))
        if i % 50 == 25:
            lines.append(b"\n")
    path.write_bytes(b"".join(lines))
    return bad


def output_lines(out_dir: Path) -> list[dict[str, Any]]:
    """Every output line of a finished `batch score` folder, shard after shard."""
    return [json.loads(line) for path in output_files(out_dir) for line in path.read_text().splitlines()]


def error_lines(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "errors.jsonl").read_text().splitlines()]


def shard_bytes(out_dir: Path) -> dict[str, bytes]:
    """The content of every output and error shard, by file name (not the timings in .done.json)."""
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("shard-*.jsonl"))}


class DiesOnce(ShardScorer):
    """A worker whose process dies (``os._exit``) in its first call of the job, as a killed or
    out-of-memory worker does: the marker file ``<out>/../died`` says it happened already."""

    def process(self, shard: Shard) -> ShardResult:
        marker = Path(self.job.out_dir).parent / "died"
        try:
            marker.open("x").close()
        except FileExistsError:
            return super().process(shard)
        os._exit(17)


class RecordsNode(ShardScorer):
    """A worker that notes which Ray node scored each shard (``<out>/../nodes/<shard>``)."""

    def process(self, shard: Shard) -> ShardResult:
        import ray

        nodes = Path(self.job.out_dir).parent / "nodes"
        nodes.mkdir(exist_ok=True)
        (nodes / shard.name).write_text(ray.get_runtime_context().get_node_id())
        return super().process(shard)


def required(module: str) -> Any:
    """``module`` imported; outside CI a missing one skips the test module, in CI (CI=true, which
    installs the [ray] extra) it fails: these tests never skip silently there."""
    import importlib

    import pytest

    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def ray_env() -> Iterator[None]:
    """For the block, the environment Ray's processes start with puts this checkout first on the
    path, so that workers import the code under test (and this module's worker classes) as the
    driver does."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + saved if saved else "")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
