"""`guardrail serve --workers N` as operators run it: a real subprocess with N uvicorn workers in front
of ``fake_upstream`` (a real server on 127.0.0.1 standing in for a remote LLM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from guardrail.audit import records, verify
from guardrail.integrations import fake_upstream
from tests.servers import free_port, running, wait_ready

BODY = {"model": "fake", "messages": [{"role": "user", "content": "Tell me about octopuses."}]}
SLOW = {"model": "fake", "messages": [{"role": "user", "content": "be slow"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    app = fake_upstream.create_app(slow_s=2.0)
    with running(app) as url:
        yield url + "/v1", app


def total(page: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(page) for s in f.samples if s.name == name)


def test_two_workers_share_one_log_add_up_their_metrics_and_drain_on_sigterm(
    upstream: tuple[str, Any], tmp_path: Path
) -> None:
    port, audit = free_port(), tmp_path / "proxy.jsonl"
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "guardrail.cli", "serve", "--upstream", upstream[0], "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", "2", "--audit", str(audit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GUARDRAIL_ALLOWED_POLICIES": "creative-writing, childrens-tutor"},
    )
    try:
        wait_ready(base + "/readyz", proc)
        served: Counter[int] = Counter()  # worker pid -> completions it answered
        for _ in range(60):
            with httpx.Client(base_url=base, timeout=30) as one_connection:  # keep-alive: one worker answers both
                assert one_connection.post("/v1/chat/completions", json=BODY).status_code == 200
                served[one_connection.get("/healthz").json()["pid"]] += 1
            if len(served) == 2 and min(served.values()) >= 2 and served.total() >= 8:
                break
        assert len(served) == 2, served  # both workers guarded requests ...
        for _ in range(4):  # ... and whichever answers /metrics counts them all
            page = httpx.get(base + "/metrics").text
            assert total(page, "guardrail_decisions_total") == served.total()
            assert total(page, "guardrail_request_seconds_count") == served.total()
        with httpx.Client(base_url=base, timeout=30) as client:
            picked = client.post("/v1/chat/completions", json=BODY, headers={"x-guardrail-policy": "creative-writing"})
            assert picked.json()["guardrail"]["policy"]["name"] == "creative-writing"  # allowed by the environment
            refused = client.post("/v1/chat/completions", json=BODY, headers={"x-guardrail-policy": "laxer"})
            assert refused.status_code == 403
            assert "lets clients pick childrens-tutor, creative-writing" in refused.json()["error"]["message"]

        slow: dict[str, Any] = {}

        def in_flight() -> None:
            slow["answer"] = httpx.post(base + "/v1/chat/completions", json=SLOW, timeout=30)

        asked = len(upstream[1].state.seen_auth)
        thread = threading.Thread(target=in_flight)
        thread.start()
        while len(upstream[1].state.seen_auth) == asked and thread.is_alive():
            time.sleep(0.02)  # until the request is in the upstream's hands ...
        proc.send_signal(signal.SIGTERM)  # ... when the operator stops the proxy
        thread.join(timeout=30)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert slow["answer"].status_code == 200  # drained: answered and recorded before the workers stopped
    assert proc.returncode == 0 and "guardrail proxy stopped" in err and "Traceback" not in err
    assert "2 workers" in out
    result = verify(audit)
    assert result.exit_code == 0 and result.checked == served.total() + 2
    assert {r["deployment"] for r in records(audit)} == {"proxy"}
    for pid in served:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no worker is left behind


def test_a_worker_started_without_its_settings_says_why_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    from guardrail.integrations.proxy_server import SETTINGS_ENV, STARTUP_FAILURE, app_from_environment

    assert SETTINGS_ENV not in os.environ
    with pytest.raises(SystemExit) as stopped:
        app_from_environment()
    assert stopped.value.code == STARTUP_FAILURE  # uvicorn's supervisor stops instead of restarting it
    assert f"cannot start: ValueError: {SETTINGS_ENV} is not set" in capsys.readouterr().err


def test_serve_refuses_an_unknown_allowed_policy_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    from guardrail.cli import main

    port = free_port()
    code = main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--port", str(port), "--allow-policy", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "Traceback" not in err
    code = main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--port", str(port), "--workers", "0"])
    assert code == 2 and "--workers must be 1 or more, got 0" in capsys.readouterr().err
