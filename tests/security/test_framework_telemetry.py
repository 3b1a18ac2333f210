"""FastAPI's own OpenTelemetry stays off even when the process has a tracer provider: its spans
would carry request paths, its logs exceptions' messages (services/app.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.context import Context
from tests.helpers import server_env

# Run in a process of its own: OpenTelemetry's global provider can be set only once.
SCRIPT = """
import sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace

class Recording(trace.NoOpTracer):
    started = []

    def start_span(self, name, *args, **kwargs):
        Recording.started.append(name)
        return super().start_span(name, *args, **kwargs)

    def start_as_current_span(self, name, *args, **kwargs):
        Recording.started.append(name)
        return super().start_as_current_span(name, *args, **kwargs)

class Provider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Recording()

trace.set_tracer_provider(Provider())
if sys.argv[1] == "service":
    from services.app import create_app
    app = create_app()
else:  # the control: a bare FastAPI application with the framework's defaults
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

with TestClient(app, base_url="http://127.0.0.1") as client:
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/cases/no-such-case/at-all").status_code in (401, 404)
print(len(Recording.started))
"""


def _spans(kind: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_the_framework_records_no_spans_under_a_configured_provider(
    ctx: Context, database_url: str, tmp_path: Path
) -> None:
    env = server_env(ctx, database_url, tmp_path)
    env["FASTAPI_OTEL_AUTO_CONFIGURE"] = "true"
    assert _spans("bare", env) > 0  # the recording provider does see FastAPI's spans
    assert _spans("service", env) == 0
