"""A service as it runs in production: ``faststream run``, HTTP ops endpoints, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.integration.harness import API_KEY, AUTH
from tests.servers.procs import free_port


def wait_http(url: str, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_service_serves_ops_endpoints_and_stops_gracefully_on_sigterm(kafka_broker, unique, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(tmp_path / "var"),
        "MAILSVC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,
        "MAILSVC_BOOTSTRAP_API_KEY": API_KEY,
        "MAILSVC_LOG_JSON": "true",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "services.mass_mailer.app:app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_http(f"{base}/healthz").json() == {"status": "ok", "service": "mass_mailer"}
        deadline = time.monotonic() + 60
        while (ready := httpx.get(f"{base}/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert ready.json() == {"ready": True, "checks": {"kafka": "ok", "database": "ok"}}
        metrics = httpx.get(f"{base}/metrics").text
        assert "mailsvc_messages_consumed_total" in metrics and "mailsvc_mails_sent_total" in metrics
        assert "openapi" in httpx.get(f"{base}/openapi.json").json()
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/asyncapi").status_code == 200

        assert httpx.get(f"{base}/v1/contacts/x").status_code == 401
        assert httpx.get(f"{base}/v1/contacts/x", headers={"X-API-Key": API_KEY + "x"}).status_code == 401
        assert httpx.get(f"{base}/v1/contacts/x", headers=AUTH).status_code == 404
        assert (
            httpx.get(f"{base}/v1/contacts/x", headers={"Authorization": f"Bearer {API_KEY}"}).status_code
            == 404
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    text = output.decode(errors="replace")
    # uvicorn re-raises the caught SIGTERM after a clean shutdown, so -15 is a normal exit here.
    assert proc.returncode in (0, -signal.SIGTERM), text[-3000:]
    assert "FastStream app shut down gracefully" in text and "Application shutdown complete" in text
    assert API_KEY.split("_", 2)[2] not in text  # the secret never reaches the log


def test_scoped_keys_are_enforced(tmp_path):
    """A key without the scope gets 403; the right scope or admin passes (no broker needed)."""
    from fastapi.testclient import TestClient

    from services.mass_mailer.app import create_app
    from shared.apikeys import create_api_key
    from shared.db import migrate, session_scope
    from shared.settings import Settings

    settings = Settings(data_dir=tmp_path / "var")
    url = settings.service_database_url("mass_mailer")
    migrate("mass_mailer", url)
    with session_scope(url) as session:
        _, reader = create_api_key(session, "reader", ["contacts:read"])
        _, sender = create_api_key(session, "sender", ["mail:send"])
    client = TestClient(create_app(settings).http)
    assert client.get("/v1/contacts/x", headers={"X-API-Key": reader}).status_code == 404
    forbidden = client.get("/v1/contacts/x", headers={"X-API-Key": sender})
    assert forbidden.status_code == 403 and "contacts:read" in forbidden.json()["detail"]
