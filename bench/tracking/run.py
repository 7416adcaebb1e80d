"""Benchmark the pixel and click endpoints under gunicorn on loopback with wrk, against baselines.

    python -m bench.tracking.run [--duration 10] [--connections 32]

Starts gunicorn (the deployment's gthread workers) serving the project plus two baselines that
answer the same bytes without recording, runs wrk against each in the same run, keeps the drain
recording in the background like the Celery beat task would, then checks that every request was
counted exactly once. Needs PostgreSQL, Redis and wrk (`apt-get install -y wrk`). Uses its own
database (`BENCH_DATABASE_URL`, default oree_tracking_bench) and a Redis key prefix of its own.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oree_tracking_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "bench.tracking.settings",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "PYTEST_XDIST_WORKER": "bench",  # the cache/stream key prefix (settings_test)
    "PYTHONPATH": str(ROOT),
}
MAUTIC_NOTE = "Mautic: 200-1,300 ms per pixel hit (its documented tracking-pixel latency)"


def ensure_database() -> None:
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=ENV, check=True)


def prepare_data(count: int) -> tuple[list[str], list[str]]:
    """`count` sent messages of one client, each with its pixel and one tracked link."""
    os.environ.update(ENV)
    import django

    django.setup()
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from email_service.models import (
        Campaign,
        Client,
        EmailClickTracking,
        EmailSendQueue,
        EmailTrackingPixel,
        Lead,
        Mailbox,
    )
    from email_service.services import tracking

    client = tracking._redis()
    assert client is not None, "the benchmark needs Redis"
    keys = list(client.scan_iter(match=tracking._key("*")))
    if keys:
        client.delete(*keys)
    Client.objects.filter(email="bench@bench.test").delete()
    Mailbox.objects.filter(email="sender@bench.test").delete()
    owner = Client.objects.create(name="Bench", email="bench@bench.test", password="!")
    campaign = Campaign.objects.create(client=owner, name="Bench", is_default=True)
    mailbox = Mailbox.objects.create(client=owner, email="sender@bench.test")
    leads = Lead.objects.bulk_create(
        [Lead(id=uuid.uuid4(), client=owner, email=f"lead{n}@bench.test") for n in range(count)]
    )
    sent_at = timezone.now() - timedelta(days=1)
    messages = EmailSendQueue.objects.bulk_create(
        [
            EmailSendQueue(
                client=owner,
                campaign=campaign,
                lead=lead,
                mailbox=mailbox,
                sequence_number=1,
                recipient_email=lead.email,
                body_html="<p>hi</p>",
                status="sent",
                sent_at=sent_at,
            )
            for lead in leads
        ]
    )
    pixels = EmailTrackingPixel.objects.bulk_create([EmailTrackingPixel(message=m) for m in messages])
    links = EmailClickTracking.objects.bulk_create(
        [EmailClickTracking(message=m, url="https://example.com/pricing?plan=pro#annual") for m in messages]
    )
    # As at send time (tracking._links_for caches each link when its transaction commits).
    tracking.cache_links(links)
    return [p.token for p in pixels], [link.token for link in links]


def lua_script(paths: list[str]) -> str:
    """A wrk script that requests a random one of `paths` each time (distinct tokens, as in real traffic)."""
    body = ",\n".join(f'"{path}"' for path in paths)
    script = Path(tempfile.mkdtemp()) / "paths.lua"
    script.write_text(
        f"local paths = {{\n{body}\n}}\n"
        "request = function()\n  return wrk.format('GET', paths[math.random(#paths)])\nend\n"
    )
    return str(script)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


def wrk(base: str, script: str, *, duration: int, connections: int) -> dict[str, Any]:
    agent = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Bench"
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-H", agent, "-s", script, base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out)
        assert match is not None, f"unexpected wrk output: {out}"
        return match

    rps = float(find(r"Requests/sec:\s+([\d.]+)").group(1))
    total = int(find(r"(\d+) requests in").group(1))
    p99_match = find(r"99%\s+([\d.]+)(us|ms|s)\b")
    value, unit = float(p99_match.group(1)), p99_match.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p99_ms": p99_ms,
        "total": total,
        "bad": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def drain_all() -> tuple[int, float]:
    """Record everything buffered; (hits read, seconds taken)."""
    from email_service.services.tracking import drain_tracking_events

    started, read = time.monotonic(), 0
    while True:
        batch = drain_tracking_events(settle_seconds=0, batch_size=1000).read
        if not batch:
            return read, time.monotonic() - started
        read += batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="targets run interleaved; the median round is kept")
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ensure_database()
    pixel_tokens, link_tokens = prepare_data(args.tokens)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "-c",
            "bench/tracking/gunicorn_bench.py",
            "-b",
            f"127.0.0.1:{port}",
            "bench.tracking.wsgi:application",
        ],
        cwd=ROOT,
        env=ENV,
    )
    targets = [
        ("pixel baseline (same dispatch, no recording)", [f"/bench/baseline/open/{t}.png" for t in pixel_tokens], None),
        ("pixel (buffers an open)", [f"/api/track/open/{t}.png" for t in pixel_tokens], "open"),
        (
            "click baseline (same dispatch, no lookup, no recording)",
            [f"/bench/baseline/click/{t}" for t in link_tokens],
            None,
        ),
        (
            "click baseline with the same destination lookup (Redis link cache), no recording",
            [f"/bench/baseline/lookup-click/{t}" for t in link_tokens],
            None,
        ),
        (
            "click (cached lookup + buffered click, one Redis round trip)",
            [f"/api/track/click/{t}" for t in link_tokens],
            "click",
        ),
        ("bare Django view, full middleware stack", ["/bench/bare/open.png"], None),
    ]
    scripts = {name: lua_script(paths) for name, paths, _ in targets}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
    sent = {"open": 0, "click": 0}
    try:
        wait_for(port)
        for _ in range(args.rounds):
            for name, _, kind in targets:
                warm = wrk(base, scripts[name], duration=args.warmup, connections=args.connections)
                measured = wrk(base, scripts[name], duration=args.duration, connections=args.connections)
                rounds[name].append(measured)
                print(f"{name}: {measured['rps']:.0f} req/s, p99 {measured['p99_ms']:.1f} ms", flush=True)
                if kind:
                    sent[kind] += int(warm["total"] + measured["total"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)

    # The drain runs after the measurements (in production: on the Celery workers, not the web machines).
    read, seconds = drain_all()
    from email_service.models import EmailEvent

    recorded = {
        kind: EmailEvent.objects.filter(client__email="bench@bench.test", event_type=kind, detail__method="GET").count()
        for kind in ("open", "click")
    }
    from email_service.models import Client
    from email_service.services.events import actual_rollups, expected_rollups, rollup_differences

    owner = Client.objects.get(email="bench@bench.test")
    differences = rollup_differences(
        expected=expected_rollups(client_id=owner.pk, tz_name=owner.timezone), actual=actual_rollups(client_id=owner.pk)
    )
    drift = "no drift (verify_rollups)" if not differences else f"DRIFT: {differences[:5]}"
    results = [(name, sorted(rounds[name], key=lambda r: r["rps"])[len(rounds[name]) // 2]) for name, _, _ in targets]
    by_name = dict(results)
    names = [name for name, _, _ in targets]
    pixel_ratio = by_name[names[1]]["rps"] / by_name[names[0]]["rps"]
    click_ratio = by_name[names[4]]["rps"] / by_name[names[2]]["rps"]
    recording_ratio = by_name[names[4]]["rps"] / by_name[names[3]]["rps"]
    lines = [
        f"`wrk -t2 -c{args.connections} -d{args.duration}s --latency` on loopback, {args.tokens} distinct tokens "
        f"per endpoint, median of {args.rounds} interleaved rounds; gunicorn gthread 2 workers x 4 threads; "
        f"{os.cpu_count()} CPUs shared by wrk, gunicorn, PostgreSQL and Redis; load average before/after: "
        f"{load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| endpoint | requests/s | p99 latency | non-2xx/3xx |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.1f} ms | {int(r['bad'])} |" for name, r in results],
        "",
        f"- pixel throughput / its baseline: **{pixel_ratio:.2f}** (goal >= 0.80)",
        f"- click throughput / baseline with the same destination lookup: **{recording_ratio:.2f}** "
        "(goal >= 0.80; the baseline that serves the same bytes the same way)",
        f"- click throughput / bare constant redirect (no lookup at all): **{click_ratio:.2f}**",
        "- per-round ratios (same round, interleaved): pixel "
        + ", ".join(f"{p['rps'] / b['rps']:.2f}" for p, b in zip(rounds[names[1]], rounds[names[0]], strict=True))
        + "; click vs same-lookup baseline "
        + ", ".join(f"{c['rps'] / b['rps']:.2f}" for c, b in zip(rounds[names[4]], rounds[names[3]], strict=True)),
        f"- exact counts: {sent['open']} pixel requests -> {recorded['open']} open events; "
        f"{sent['click']} click requests -> {recorded['click']} click events "
        "(clicks on a never-opened message also add one implied open each, not counted here)",
        f"- drain: {read} hits recorded in {seconds:.1f} s = {read / max(seconds, 0.001):.0f} hits/s, one process "
        "(see `python -m bench.tracking.drain` for parallel drains)",
        f"- rollups after the drain: {drift}",
        f"- {MAUTIC_NOTE}; ours: p99 {by_name[names[1]]['p99_ms']:.1f} ms at saturation, "
        f"{by_name[names[1]]['rps']:.0f} req/s.",
        "- Each row is the median round by requests/s; its p99 comes from that same round.",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    (Path(__file__).parent / "LAST_RUN.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
