"""Benchmark the pixel and click endpoints under gunicorn on loopback with wrk, against baselines.

    python -m bench.tracking.run [--duration 2] [--rounds 16] [--connections 32]

Starts gunicorn (the deployment's gthread workers) serving the project plus baselines that answer
the same bytes without recording, runs wrk against each endpoint right beside its baseline for
several rounds, then drains the buffer (as the Celery beat task would) and checks that every
request was counted exactly once. Needs PostgreSQL, Redis and wrk (`apt-get install -y wrk`). Uses its own
database (`BENCH_DATABASE_URL`, default oree_tracking_bench) and a Redis key prefix of its own.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
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
    "TRACKING_FLUSH_MS": os.environ.get("TRACKING_FLUSH_MS", "10"),  # the deployment default (settings_test: 0)
    "PYTHONPATH": str(ROOT),
}
PIXEL_BASE = "pixel baseline (same dispatch, no recording)"
PIXEL = "pixel (buffers an open)"
LOOKUP_BASE = "click baseline with the same destination lookup (Redis link cache), no recording"
CLICK = "click (cached lookup + buffered click, one Redis round trip)"
CLICK_BASE = "click baseline (same dispatch, no lookup, no recording)"
BARE = "bare Django view, full middleware stack"
MAUTIC_NOTE = "Mautic: 200-1,300 ms per pixel hit (its documented tracking-pixel latency)"


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def redis_pid() -> int:
    import redis

    return int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])


class Cpu:
    """CPU spent by gunicorn (master and workers), Redis and wrk between creation and `per_request`."""

    def __init__(self, server_pid: int, redis_process: int) -> None:
        self.web = [server_pid, *_children(server_pid)]
        self.redis = redis_process
        self.started = self._now()

    def _now(self) -> tuple[float, float, float]:
        children = os.times()  # wrk is this process's child: its CPU shows up once it has been waited for
        return (
            sum(_cpu_seconds(pid) for pid in self.web),
            _cpu_seconds(self.redis),
            children.children_user + children.children_system,
        )

    def per_request(self, requests: int) -> dict[str, float]:
        """Microseconds of CPU per request: web, redis, wrk and their total."""
        spent = [(now - then) * 1e6 / max(requests, 1) for now, then in zip(self._now(), self.started, strict=True)]
        return {"web": spent[0], "redis": spent[1], "wrk": spent[2], "total": sum(spent)}


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
    from email_service.tracking import hits as tracking

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
    from email_service.tracking.hits import drain_tracking_events

    started, read = time.monotonic(), 0
    while True:
        batch = drain_tracking_events(settle_seconds=0, batch_size=1000).read
        if not batch:
            return read, time.monotonic() - started
        read += batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=16, help="rounds of paired runs; medians are reported")
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
    # Each endpoint runs right beside its baseline (the order alternating every round), so a pair's
    # ratio compares two runs a few seconds apart; the unpaired references run after them.
    targets = [
        (PIXEL_BASE, [f"/bench/baseline/open/{t}.png" for t in pixel_tokens], None),
        (PIXEL, [f"/api/track/open/{t}.png" for t in pixel_tokens], "open"),
        (LOOKUP_BASE, [f"/bench/baseline/lookup-click/{t}" for t in link_tokens], None),
        (CLICK, [f"/api/track/click/{t}" for t in link_tokens], "click"),
        (CLICK_BASE, [f"/bench/baseline/click/{t}" for t in link_tokens], None),
        (BARE, ["/bench/bare/open.png"], None),
    ]
    scripts = {name: lua_script(paths) for name, paths, _ in targets}
    kinds = {name: kind for name, _, kind in targets}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
    sent = {"open": 0, "click": 0}

    def measure(name: str, duration: int) -> dict[str, Any]:
        cpu = Cpu(server.pid, redis_pid())
        result = wrk(base, scripts[name], duration=duration, connections=args.connections)
        parts = cpu.per_request(result["total"])
        result["cpu_us"], result["cpu_parts"] = parts["total"], parts
        kind = kinds[name]
        if kind:
            sent[kind] += int(result["total"])
        return result

    pairs = [(PIXEL_BASE, PIXEL), (LOOKUP_BASE, CLICK)]
    try:
        wait_for(port)
        for name, _, _ in targets:  # warm every target once (imports, connections, caches)
            measure(name, args.warmup)
        for number in range(args.rounds):
            order = [name for pair in pairs for name in (pair if number % 2 == 0 else pair[::-1])]
            for name in [*order, CLICK_BASE, BARE]:
                measured = measure(name, args.duration)
                rounds[name].append(measured)
                print(
                    f"round {number + 1} {name}: {measured['rps']:.0f} req/s, p99 {measured['p99_ms']:.1f} ms, "
                    f"{measured['cpu_us']:.0f} us CPU/request "
                    f"(web {measured['cpu_parts']['web']:.0f}, Redis {measured['cpu_parts']['redis']:.0f}, "
                    f"wrk {measured['cpu_parts']['wrk']:.0f})",
                    flush=True,
                )
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
    from email_service.events.rollups import actual_rollups, expected_rollups, rollup_differences
    from email_service.models import Client

    owner = Client.objects.get(email="bench@bench.test")
    differences = rollup_differences(
        expected=expected_rollups(client_id=owner.pk, tz_name=owner.timezone), actual=actual_rollups(client_id=owner.pk)
    )
    drift = "no drift (verify_rollups)" if not differences else f"DRIFT: {differences[:5]}"

    def paired(real: str, baseline: str, key: str) -> list[float]:
        """Per-round ratios: throughput real/baseline, or CPU per request baseline/real (higher is better for both)."""
        pairs = zip(rounds[real], rounds[baseline], strict=True)
        return [r["rps"] / b["rps"] if key == "rps" else b["cpu_us"] / r["cpu_us"] for r, b in pairs]

    results = [(name, sorted(rounds[name], key=lambda r: r["rps"])[len(rounds[name]) // 2]) for name, _, _ in targets]
    by_name = dict(results)
    pixel_rps, click_rps = paired(PIXEL, PIXEL_BASE, "rps"), paired(CLICK, LOOKUP_BASE, "rps")
    pixel_cpu, click_cpu = paired(PIXEL, PIXEL_BASE, "cpu"), paired(CLICK, LOOKUP_BASE, "cpu")

    def listed(values: list[float]) -> str:
        return ", ".join(f"{value:.2f}" for value in values)

    lines = [
        f"`wrk -t2 -c{args.connections} -d{args.duration}s --latency` on loopback, {args.tokens} distinct tokens "
        f"per endpoint, {args.rounds} rounds, each endpoint run right beside its baseline (order alternating); "
        f"gunicorn gthread 2 workers x 4 threads; {os.cpu_count()} CPUs shared by wrk, gunicorn, PostgreSQL and "
        f"Redis; load average before/after: {load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| endpoint | requests/s | p99 latency | CPU per request: all (gunicorn / Redis / wrk) | non-2xx/3xx |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.1f} ms | {r['cpu_us']:.0f} us ({r['cpu_parts']['web']:.0f} / "
            f"{r['cpu_parts']['redis']:.0f} / {r['cpu_parts']['wrk']:.0f}) | {int(r['bad'])} |"
            for name, r in results
        ],
        "",
        f"- pixel / its baseline, median of the per-round ratios: **{statistics.median(pixel_rps):.2f}** "
        f"(goal >= 0.80); rounds: {listed(pixel_rps)}",
        f"- click / baseline with the same destination lookup, median of the per-round ratios: "
        f"**{statistics.median(click_rps):.2f}** (goal >= 0.80); rounds: {listed(click_rps)}",
        f"- the same from the medians of each row: pixel {by_name[PIXEL]['rps'] / by_name[PIXEL_BASE]['rps']:.2f}, "
        f"click {by_name[CLICK]['rps'] / by_name[LOOKUP_BASE]['rps']:.2f}; click / bare constant redirect (no "
        f"lookup at all) {by_name[CLICK]['rps'] / by_name[CLICK_BASE]['rps']:.2f}",
        f"- CPU per request, baseline / endpoint (the throughput a CPU-bound machine can reach, less sensitive to "
        f"scheduling noise): pixel **{statistics.median(pixel_cpu):.2f}** (rounds {listed(pixel_cpu)}), click "
        f"**{statistics.median(click_cpu):.2f}** (rounds {listed(click_cpu)})",
        f"- exact counts: {sent['open']} pixel requests -> {recorded['open']} open events; "
        f"{sent['click']} click requests -> {recorded['click']} click events "
        "(clicks on a never-opened message also add one implied open each, not counted here)",
        f"- drain: {read} hits recorded in {seconds:.1f} s = {read / max(seconds, 0.001):.0f} hits/s, one process "
        "(see `python -m bench.tracking.drain` for parallel drains)",
        f"- rollups after the drain: {drift}",
        f"- {MAUTIC_NOTE}; ours: p99 {by_name[PIXEL]['p99_ms']:.1f} ms at saturation, "
        f"{by_name[PIXEL]['rps']:.0f} req/s.",
        "- Each row is the median round by requests/s; its p99 and CPU come from that same round.",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    (Path(__file__).parent / "LAST_RUN.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
