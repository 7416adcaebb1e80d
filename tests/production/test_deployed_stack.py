"""What render.yaml deploys sends, tracks and counts email: the production smoke test.

Built from requirements.txt alone, with build.sh and the pre-deploy command, started with the
start commands render.yaml itself gives and the environment it gives them, on PostgreSQL and
Redis, pointed at the Google sandbox over HTTP; then driven through HTTP only, as n8n, a client, a
recipient and Render's proxy would.
"""

from __future__ import annotations

import re
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from google_sandbox.control import SandboxControl
from tests.production.blueprint import Blueprint
from tests.production.conftest import (
    SMOKE_REDIS_DB,
    Processes,
    RenderProxy,
    clean_environment,
    free_port,
    fresh_database,
    own_redis_database,
    start_google_sandbox,
    wait_for,
)

pytestmark = pytest.mark.slow

PUBLIC_HOST = "oreestats-smoke.onrender.test"
PUBLIC_BASE_URL = f"https://{PUBLIC_HOST}"
SENDER = "sales@smoke-company.test"
LEAD = "prospect@buyer.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
)
# A hit this long after the send is past the machine-timing windows (MACHINE_*_WINDOW_SECONDS: 3 and 10).
PAST_MACHINE_WINDOWS = 11


def test_what_render_yaml_deploys_sends_tracks_and_counts_email(production_venv: Path, processes: Processes):
    blueprint = Blueprint.load()
    web, worker, beat = (blueprint.service(name) for name in ("oreestats-web", "oreestats-worker", "oreestats-beat"))
    # The sandbox plays Google: its OAuth client is what the operator would paste into the dashboard.
    client_id, client_secret = "oree-smoke.apps.googleusercontent.com", "GOCSPX-" + uuid.uuid4().hex
    google = start_google_sandbox(
        processes,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=f"{PUBLIC_BASE_URL}/api/oauth/callback",
        accounts=[f"{SENDER}=Sam Smoke"],
    )
    sandbox = SandboxControl(google["GMAIL_API_ENDPOINT"])
    port = free_port()

    with fresh_database("oree_smoke") as database_url, own_redis_database(SMOKE_REDIS_DB) as redis_url:
        operator = {
            "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": PUBLIC_HOST,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "GOOGLE_CLIENT_ID": client_id,
            "GOOGLE_CLIENT_SECRET": client_secret,
        }

        def environment(service) -> dict[str, str]:
            env = blueprint.environment(service, database_url=database_url, redis_url=redis_url, operator=operator)
            # Render's own variables, and where "Google" is: the only values not from render.yaml.
            return {**clean_environment(production_venv), **env, **google, "RENDER": "true", "PORT": str(port)}

        web_env = environment(web)
        shape = {key: web_env[key] for key in ("DEBUG", "TRUSTED_PROXY_COUNT", "SECURE_SSL_REDIRECT")}
        assert shape == {"DEBUG": "0", "TRUSTED_PROXY_COUNT": "1", "SECURE_SSL_REDIRECT": "1"}
        api_key = web_env["OREE_API_KEY"]
        assert environment(worker)["OREE_API_KEY"] == api_key  # one group, one generated value

        # Build and pre-deploy, as Render runs them for the web service.
        processes.run("build", web.command("buildCommand"), env=web_env)
        processes.run("pre-deploy", web.command("preDeployCommand"), env=web_env)
        processes.start("web", web.command("startCommand"), env=web_env)
        processes.start("worker", worker.command("startCommand"), env=environment(worker))
        processes.start("beat", beat.command("startCommand"), env=environment(beat))

        proxy = RenderProxy(public_host=PUBLIC_HOST, port=port)
        assert_healthy_within(proxy, processes, timeout=120)
        assert_plain_http_is_redirected_to_https(proxy)

        account = {"email": "owner@smoke-company.test", "password": "smoke-Password-7714"}
        client_uuid = create_client_with_the_documented_command(processes, web_env, account)
        auth = {"Authorization": f"Bearer {api_key}"}
        connect_mailbox_through_oauth(proxy, auth, client_uuid)

        lead_id = str(uuid.uuid4())
        first = send_step(proxy, auth, client_uuid, lead_id, 1)
        step1 = wait_for(lambda: sent_once(sandbox, 1), timeout=60, what="step 1 in the sandbox")
        second = send_step(proxy, auth, client_uuid, lead_id, 2)
        step2 = wait_for(lambda: sent_once(sandbox, 2), timeout=60, what="step 2 in the sandbox")
        assert first["mailbox_email"] == second["mailbox_email"] == SENDER
        assert step2.thread_id == step1.thread_id
        assert step2.header("In-Reply-To") == step1.message_id

        # The lead answers step 2 in the same thread; the poller (beat, every 60 s) must find it.
        sandbox.deliver(SENDER, reply_to(step2), thread_id=step2.thread_id)

        # A person opens step 1 and follows its link, after the machine-timing windows.
        html = step1.html_body or ""
        pixel = re.search(rf"{re.escape(PUBLIC_BASE_URL)}/api/track/open/[^\"'\s]+\.png", html)
        link = re.search(rf"{re.escape(PUBLIC_BASE_URL)}/api/track/click/[^\"'\s]+", html)
        assert pixel and link, html
        time.sleep(max(0.0, step1.received_at + PAST_MACHINE_WINDOWS - time.time()))
        opened = proxy.get(pixel.group(0), headers={"User-Agent": CHROME})
        assert opened.status_code == 200 and opened.headers["Content-Type"] == "image/png"
        clicked = proxy.get(link.group(0), headers={"User-Agent": CHROME})
        assert clicked.status_code == 302
        assert clicked.headers["Location"] == "https://buyer-docs.test/pricing?plan=team"

        def counted() -> list[dict[str, Any]] | None:
            rows = proxy.get(f"/api/email/status/{lead_id}", headers=auth).json()["emails"]
            by_step = {row["sequence_number"]: row for row in rows}
            done = by_step[1]["opens"] == 1 and by_step[1]["clicks"] == 1 and by_step[2]["replied"]
            return rows if done else None

        rows = wait_for(counted, timeout=120, interval=2, what="the open, the click and the reply to be recorded")
        assert [row["status"] for row in sorted(rows, key=lambda r: r["sequence_number"])] == ["sent", "sent"]
        assert {row["gmail_message_id"] for row in rows} == {step1.gmail_id, step2.gmail_id}

        assert_dashboard_counts_it_all(proxy, account)
        # Nothing went out twice, even after everything settled.
        assert len(sandbox.sent_messages(SENDER)) == 2
        processes.assert_all_running()
        processes.stop()  # before the database goes

    assert processes.tracebacks() == {}


def assert_healthy_within(proxy: RenderProxy, processes: Processes, *, timeout: float) -> None:
    last: dict[str, Any] = {}

    def healthy() -> bool:
        processes.assert_all_running()
        try:
            response = proxy.get("/api/health", timeout=5)
        except OSError:
            return False
        if response.headers.get("Content-Type", "").startswith("application/json"):
            last.update(response.json())
        return response.status_code == 200

    try:
        wait_for(healthy, timeout=timeout, interval=1, what="/api/health to answer 200")
    except AssertionError as error:
        raise AssertionError(f"{error}; last answer: {last}") from None
    components = last["components"]
    assert components["database"]["detail"] == "postgresql"
    assert components["broker"]["detail"] == "redis"
    assert proxy.get("/api/health/web").status_code == 200  # render.yaml's healthCheckPath


def assert_plain_http_is_redirected_to_https(proxy: RenderProxy) -> None:
    response = proxy.get("/api/client/stats", proto="http")
    assert response.status_code == 301
    assert response.headers["Location"] == f"{PUBLIC_BASE_URL}/api/client/stats"


def create_client_with_the_documented_command(
    processes: Processes, env: dict[str, str], account: dict[str, Any]
) -> str:
    argv = [
        "python", "manage.py", "create_client", "--name", "Smoke Company",
        "--email", account["email"], "--password", account["password"], "--timezone", "Europe/Paris",
    ]  # fmt: skip
    output = processes.run("create-client", argv, env=env)
    return str(uuid.UUID(output.strip().splitlines()[-1]))


def connect_mailbox_through_oauth(proxy: RenderProxy, auth: dict[str, Any], client_uuid: str) -> None:
    """Initiate with the API key, consent at "Google" as the user's browser would, land on our callback."""
    import requests

    initiate = proxy.get(
        f"/api/oauth/initiate/{client_uuid}",
        params={"login_hint": SENDER},
        headers={**auth, "Accept": "application/json"},
    )
    assert initiate.status_code == 200, initiate.text
    consent = requests.get(initiate.json()["authorization_url"], allow_redirects=False, timeout=10)
    assert consent.status_code == 302, consent.text
    callback = consent.headers["Location"]
    assert callback.startswith(f"{PUBLIC_BASE_URL}/api/oauth/callback?")
    connected = proxy.get(callback, headers={"Accept": "application/json"})
    assert connected.status_code == 200, connected.text
    assert connected.json()["mailbox"]["email"] == SENDER


def send_step(proxy: RenderProxy, auth: dict[str, Any], client_uuid: str, lead_id: str, step: int) -> dict[str, Any]:
    response = proxy.post(
        "/api/email/send",
        headers=auth,
        json={
            "lead_id": lead_id,
            "client_id": client_uuid,
            "recipient_email": LEAD,
            "lead_first_name": "Pat",
            "email_subject": "Your team's pricing" if step == 1 else "Re: Your team's pricing",
            "email_body": (
                "<p>Hi Pat, the <a href='https://buyer-docs.test/pricing?plan=team'>team plan</a> fits.</p>"
                if step == 1
                else "<p>Pat, any thoughts on the team plan?</p>"
            ),
            "sequence_number": step,
        },
    )
    assert response.status_code == 202, response.text
    queued: dict[str, Any] = response.json()
    return queued


def sent_once(sandbox: SandboxControl, step: int):
    """The one message the sandbox accepted for `step` (None while there is none; failing on two)."""
    subject = "Your team's pricing" if step == 1 else "Re: Your team's pricing"
    matching = [message for message in sandbox.sent_messages(SENDER) if message.header("Subject") == subject]
    assert len(matching) <= 1, f"step {step} was delivered {len(matching)} times"
    return matching[0] if matching else None


def reply_to(message) -> bytes:
    reply = EmailMessage()
    reply["From"] = f"Pat Prospect <{LEAD}>"
    reply["To"] = SENDER
    reply["Subject"] = "Re: Your team's pricing"
    reply["Message-ID"] = f"<{uuid.uuid4().hex}@buyer.test>"
    reply["In-Reply-To"] = message.message_id
    reply["References"] = f"{message.header('References') or ''} {message.message_id}".strip()
    reply.set_content("Thanks, let's talk on Tuesday.\n\nOn Monday you wrote:\n> Pat, any thoughts on the team plan?")
    return reply.as_bytes()


def assert_dashboard_counts_it_all(proxy: RenderProxy, account: dict[str, Any]) -> None:
    login = proxy.post("/api/client/login", json=account)
    assert login.status_code == 200, login.text
    dashboard = {"Authorization": f"Bearer {login.json()['access_token']}"}
    stats = proxy.get("/api/client/stats", headers=dashboard).json()["all_time"]
    assert {key: stats[key] for key in ("emails_sent", "opens", "clicks", "replies", "machine_opens")} == {
        "emails_sent": 2,
        "opens": 1,
        "clicks": 1,
        "replies": 1,
        "machine_opens": 0,
    }, stats
    replies = proxy.get("/api/client/replies", headers=dashboard).json()["results"]
    assert [(reply["kind"], reply["lead_email"], reply["sequence_number"]) for reply in replies] == [("reply", LEAD, 2)]
