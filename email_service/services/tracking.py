"""Open and click tracking: the links and pixel put into each message, and recording what comes back.

Two halves:

- **At send time** `prepare_tracked_html` (called by the sending pipeline's message builder)
  rewrites every http(s) link into an opaque click URL, stores the byte-exact original
  destination, fills the `{{unsubscribe_url}}` placeholder and adds one pixel.
- **On the hot path** the endpoints call `buffer_hit`: one Redis `XADD` (and, for a click, one
  `ZADD` in the same round trip), then the answer goes out. `drain_tracking_events`, run by a
  Celery beat task, labels the hits (services.machine) and records them through
  `services.events.record_event`, each with the stream entry id as its `dedupe_key`, so a drain
  that crashes half way and runs again never counts twice. Without Redis (the serverless
  default) the hit is recorded in the request instead.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import logging
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction

from email_service.models import EmailClickTracking, EmailSendQueue, EmailTrackingPixel
from email_service.services import machine
from email_service.services.events import record_event

logger = logging.getLogger(__name__)

USER_AGENT_MAX = 512
# `models.new_token` makes 22 url-safe characters; anything outside this shape is not ours.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,43}$")
UNSUBSCRIBE_PLACEHOLDER_RE = re.compile(r"\{\{\s*unsubscribe_url\s*\}\}")
# Browsers strip these from both ends of a URL before following it (WHATWG URL parser).
_URL_STRIP = "".join(chr(c) for c in range(0x21))
_TRACKED_TAGS = frozenset({"a", "area"})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _transparent_png() -> bytes:
    """A 1x1 fully transparent RGBA PNG, with CRCs computed rather than typed in by hand."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00\x00\x00\x00", 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


# Built once at import: the hot path serves these bytes and nothing else.
PIXEL_PNG: bytes = _transparent_png()


# ---------------------------------------------------------------------------------------------
# Send time: rewriting the body
# ---------------------------------------------------------------------------------------------


def click_url(token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/api/track/click/{token}"


def pixel_url(token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/api/track/open/{token}.png"


def unsubscribe_url(message: EmailSendQueue) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/u/{message.unsubscribe_token}"


@dataclass(frozen=True)
class _Anchor:
    start: int  # offset of the start tag in the source
    raw: str  # the start tag exactly as written
    href: str  # the first href, entities decoded (what a browser follows)


class _AnchorFinder(HTMLParser):
    """Finds link start tags and where `</body>` is, with their exact offsets in the source."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Anchor] = []
        self.body_end: int | None = None
        self._line_starts = [0]
        for index, char in enumerate(source):
            if char == "\n":
                self._line_starts.append(index + 1)

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TRACKED_TAGS:
            return
        href = next((value for name, value in attrs if name == "href"), None)
        raw = self.get_starttag_text()
        if href is not None and raw is not None:
            self.anchors.append(_Anchor(self._offset(), raw, href))

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


# One attribute inside a start tag, as html.parser reads them.
_ATTRIBUTE_RE = re.compile(
    r"""(?P<name>[^\s/>][^\s/=>]*)(?:\s*=\s*(?P<value>'[^']*'|"[^"]*"|(?!['"])[^>\s]*))?""", re.DOTALL
)


def _replace_href(raw_tag: str, new_url: str) -> str:
    """The tag with its first href value replaced, everything else (case, quoting, spacing) untouched."""
    name_end = re.match(r"<[a-zA-Z][^\s/>]*", raw_tag)
    position = name_end.end() if name_end else 1
    for match in _ATTRIBUTE_RE.finditer(raw_tag, position):
        if match.group("name").lower() != "href" or match.group("value") is None:
            continue
        value = match.group("value")
        quote = value[0] if value[:1] in ("'", '"') else ""
        replacement = f"{quote}{html.escape(new_url, quote=True)}{quote}"
        return raw_tag[: match.start("value")] + replacement + raw_tag[match.end("value") :]
    return raw_tag


def is_trackable(url: str) -> bool:
    """http(s) links to somewhere else than our own tracking and unsubscribe pages."""
    lowered = url.lower()
    if not lowered.startswith(("http://", "https://")):
        return False
    base = settings.PUBLIC_BASE_URL.rstrip("/").lower()
    return not lowered.startswith((f"{base}/u/", f"{base}/api/track/"))


def _links_for(message: EmailSendQueue, destinations: list[str]) -> list[str]:
    """A token per destination, reusing the ones of an earlier build of the same message.

    A send retried after an unknown outcome rebuilds the body: the copy that may already be in
    the recipient's inbox must keep working, so the same (position, url) keeps its token.
    """
    existing = {(link.position, link.url): link.token for link in EmailClickTracking.objects.filter(message=message)}
    tokens: list[str] = []
    created: list[EmailClickTracking] = []
    for position, url in enumerate(destinations):
        token = existing.get((position, url))
        if token is None:
            link = EmailClickTracking(message=message, url=url, position=position)
            created.append(link)
            token = link.token
        tokens.append(token)
    EmailClickTracking.objects.bulk_create(created)
    return tokens


def _pixel_tag(message: EmailSendQueue) -> str:
    pixel, _ = EmailTrackingPixel.objects.get_or_create(message=message)
    return (
        f'<img src="{pixel_url(pixel.token)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;" />'
    )


def prepare_tracked_html(*, message: EmailSendQueue, html: str) -> str:
    """The body as it goes out: links rewritten to tracked URLs and the open pixel added.

    The seam the sending pipeline's message builder calls for every message. Honours the
    client's `click_tracking`/`open_tracking`; always fills `{{unsubscribe_url}}`.
    """
    client = message.client
    body = html
    with transaction.atomic():
        if client.click_tracking:
            body = _rewrite_links(message, body)
        if client.open_tracking:
            finder = _AnchorFinder(body)
            finder.feed(body)
            finder.close()
            tag = _pixel_tag(message)
            at = finder.body_end if finder.body_end is not None else len(body)
            body = body[:at] + tag + body[at:]
    return UNSUBSCRIBE_PLACEHOLDER_RE.sub(unsubscribe_url(message), body)


def _rewrite_links(message: EmailSendQueue, body: str) -> str:
    finder = _AnchorFinder(body)
    finder.feed(body)
    finder.close()
    anchors = [a for a in finder.anchors if is_trackable(a.href.strip(_URL_STRIP))]
    if not anchors:
        return body
    tokens = _links_for(message, [a.href.strip(_URL_STRIP) for a in anchors])
    pieces: list[str] = []
    cursor = 0
    for anchor, token in zip(anchors, tokens, strict=True):
        pieces.append(body[cursor : anchor.start])
        pieces.append(_replace_href(anchor.raw, click_url(token)))
        cursor = anchor.start + len(anchor.raw)
    pieces.append(body[cursor:])
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------
# Hot path: reading the request and buffering the hit
# ---------------------------------------------------------------------------------------------


def _parse_ip(candidate: str) -> str | None:
    value = candidate.strip().strip('"')
    if value.startswith("["):  # [v6]:port
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(meta: Mapping[str, Any]) -> str | None:
    """The client's address: `TRUSTED_PROXY_COUNT` entries from the right of X-Forwarded-For.

    Each trusted proxy appends the address it saw, so the entry the outermost one appended is the
    client. Anything unparsable gives None rather than an error: recording must go on.
    """
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted > 0:
        header = meta.get("HTTP_X_FORWARDED_FOR")
        if isinstance(header, str) and header:
            entries = [entry for entry in header[:2048].split(",") if entry.strip()]
            if entries:
                return _parse_ip(entries[-trusted] if len(entries) >= trusted else entries[0])
    remote = meta.get("REMOTE_ADDR")
    return _parse_ip(remote) if isinstance(remote, str) else None


def hit_facts(*, method: str, meta: Mapping[str, Any]) -> machine.HitFacts:
    headers = {name: str(meta.get("HTTP_" + name.upper().replace("-", "_"), "")) for name in machine.PREFETCH_HEADERS}
    user_agent = str(meta.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX]
    return machine.HitFacts(
        method=method, user_agent=user_agent, ip=client_ip(meta), prefetch=machine.is_prefetch(headers)
    )


_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis | None:
    url = settings.REDIS_URL
    if not url:
        return None
    client = _redis_clients.get(url)
    if client is None:
        # Short timeouts: a slow Redis must not hold the pixel; the hit is then recorded in-process.
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        _redis_clients[url] = client
    return client


def _key(name: str) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "oree")
    return f"{prefix}:tracking:{name}"


def stream_key() -> str:
    return _key("hits")


def _burst_key(message_id: str, ip: str | None) -> str:
    return _key(f"burst:{message_id}:{ip or '-'}")


BURST_KEY_TTL_SECONDS = 3600


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _PendingHit:
    fields: dict[str, str | int]
    burst: tuple[str, str, int] | None  # (key, member, score) for a click
    done: threading.Event
    ok: bool = False


class _GroupCommit:
    """Sends the hits of concurrent requests of one process to Redis in one pipelined round trip.

    The first request to arrive flushes everything queued meanwhile (leader/followers); each
    request still answers only after Redis has its hit, so nothing is acknowledged that is not stored.
    The queue is bounded by the worker's thread count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_PendingHit] = []
        self._flushing = False

    def submit(self, client: redis.Redis, hit: _PendingHit) -> bool:
        with self._lock:
            self._queue.append(hit)
            leader = not self._flushing
            self._flushing = True
        if not leader:
            # The leader's socket timeout bounds this wait.
            hit.done.wait(5.0)
            return hit.ok
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._flushing = False
                    break
            ok = self._flush(client, batch)
            for item in batch:
                item.ok = ok
                item.done.set()
        return hit.ok

    @staticmethod
    def _flush(client: redis.Redis, batch: list[_PendingHit]) -> bool:
        pipe = client.pipeline(transaction=False)
        for item in batch:
            if item.burst:
                key, member, score = item.burst
                pipe.zadd(key, {member: score})
                pipe.expire(key, BURST_KEY_TTL_SECONDS)
            pipe.xadd(stream_key(), item.fields)  # type: ignore[arg-type]
        try:
            pipe.execute()
        except redis.RedisError:
            logger.warning("Tracking buffer unavailable; recording in the request instead")
            return False
        return True


_group_commit = _GroupCommit()


def buffer_hit(
    *, kind: str, token: str, facts: machine.HitFacts, message_id: str | None = None, link_token: str | None = None
) -> bool:
    """Queue one hit for the drain (one Redis round trip, shared with concurrent requests); False without Redis."""
    client = _redis()
    if client is None:
        return False
    now_ms = _now_ms()
    fields: dict[str, str | int] = {
        "k": kind,
        "t": token,
        "m": facts.method,
        "ua": facts.user_agent,
        "ip": facts.ip or "",
        "p": int(facts.prefetch),
        "ts": now_ms,
    }
    burst = None
    if kind == "c" and message_id and link_token:
        # Every click of a message from one source, for the burst rule; shared by all web processes.
        rid = secrets.token_hex(6)
        fields["r"] = rid
        burst = (_burst_key(message_id, facts.ip), f"{link_token}|{rid}", now_ms)
    return _group_commit.submit(client, _PendingHit(fields=fields, burst=burst, done=threading.Event()))


def find_link(token: str) -> EmailClickTracking | None:
    """The tracked link behind a click token (the only source of a redirect's destination)."""
    if not TOKEN_RE.match(token):
        return None
    # One primary-key lookup in plain SQL: the ORM's query building costs more than the query here.
    with connection.cursor() as cursor:
        cursor.execute(_LINK_SQL, [token])
        row = cursor.fetchone()
    if row is None:
        return None
    return EmailClickTracking(token=row[0], url=row[1], message_id=row[2])


_LINK_SQL = f"SELECT token, url, message_id FROM {EmailClickTracking._meta.db_table} WHERE token = %s"  # noqa: S608 - table name from model metadata


# ---------------------------------------------------------------------------------------------
# Recording: labelling and counting
# ---------------------------------------------------------------------------------------------


def record_open(
    *,
    pixel: EmailTrackingPixel,
    facts: machine.HitFacts,
    occurred_at: datetime,
    dedupe_key: str | None = None,
) -> bool:
    """Label and record one pixel fetch; False when it was recorded before."""
    message = pixel.message
    verdict = machine.classify_open(facts=facts, occurred_at=occurred_at, sent_at=message.sent_at)
    event = record_event(
        message=message,
        event_type="open",
        occurred_at=occurred_at,
        is_machine=verdict.is_machine,
        machine_reason=verdict.reason,
        dedupe_key=dedupe_key,
        ip=facts.ip,
        user_agent=facts.user_agent,
        detail={"method": facts.method},
    )
    return event is not None


def record_click(
    *,
    link: EmailClickTracking,
    facts: machine.HitFacts,
    occurred_at: datetime,
    in_burst: bool = False,
    dedupe_key: str | None = None,
) -> bool:
    """Label and record one click; a person's click on a message nobody opened also counts its open."""
    message = link.message
    verdict = machine.classify_click(facts=facts, occurred_at=occurred_at, sent_at=message.sent_at, in_burst=in_burst)
    with transaction.atomic():
        event = record_event(
            message=message,
            event_type="click",
            occurred_at=occurred_at,
            is_machine=verdict.is_machine,
            machine_reason=verdict.reason,
            dedupe_key=dedupe_key,
            link=link,
            ip=facts.ip,
            user_agent=facts.user_agent,
            detail={"method": facts.method},
        )
        if event is None:
            return False
        if (
            not verdict.is_machine
            and not EmailSendQueue.objects.filter(pk=message.pk, first_opened_at__isnull=False).exists()
        ):
            # Images blocked, yet the person clicked: they read it. One implied open per message.
            record_event(
                message=message,
                event_type="open",
                occurred_at=occurred_at,
                dedupe_key=f"implied-open:{message.pk}",
                ip=facts.ip,
                user_agent=facts.user_agent,
                detail={"implied_by_click": True},
            )
    return True


def record_open_now(*, token: str, facts: machine.HitFacts) -> None:
    """The in-request fallback when the buffer is unavailable."""
    if not TOKEN_RE.match(token):
        return
    pixel = EmailTrackingPixel.objects.filter(token=token).select_related("message__client").first()
    if pixel is not None:
        record_open(pixel=pixel, facts=facts, occurred_at=datetime.now(UTC))


def record_click_now(*, link: EmailClickTracking, facts: machine.HitFacts) -> None:
    """The in-request fallback when the buffer is unavailable (the burst rule needs the buffer)."""
    full = EmailClickTracking.objects.select_related("message__client").get(pk=link.pk)
    record_click(link=full, facts=facts, occurred_at=datetime.now(UTC))


# ---------------------------------------------------------------------------------------------
# The drain
# ---------------------------------------------------------------------------------------------

# Clicks wait this long in the buffer, so every click of a possible burst is there when one is labelled.
DRAIN_SETTLE_SECONDS = machine.BURST_WINDOW_SECONDS + 0.5
DRAIN_LOCK_SECONDS = 20


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _in_burst(client: redis.Redis, *, message_id: str, ip: str | None, rid: str, ts: int) -> bool:
    window_ms = int(machine.BURST_WINDOW_SECONDS * 1000)
    rows: list[tuple[Any, Any]] = client.zrangebyscore(  # type: ignore[assignment]
        _burst_key(message_id, ip), ts - window_ms, ts + window_ms, withscores=True
    )
    clicks = []
    for member, score in rows:
        link, _, click_id = _text(member).partition("|")
        clicks.append((float(score) / 1000.0, link, click_id))
    return rid in machine.burst_members(clicks)


@dataclass
class DrainResult:
    read: int = 0
    recorded: int = 0
    unknown: int = 0


def drain_tracking_events(
    *, batch_size: int = 500, settle_seconds: float = DRAIN_SETTLE_SECONDS, max_seconds: float = 50.0
) -> DrainResult:
    """Record buffered hits older than `settle_seconds`, oldest first, until none are left or time is up.

    One drain at a time (a Redis lock); each hit is recorded with `dedupe_key=trk:<entry id>` and
    deleted from the stream only afterwards, so a crash in between replays it harmlessly.
    """
    result = DrainResult()
    client = _redis()
    if client is None:
        return result
    # Short lease, renewed per batch: a drain killed mid-way holds up the next one for seconds only.
    # Two drains overlapping after an expiry are harmless (dedupe keys), just wasted work.
    lock = client.lock(_key("drain-lock"), timeout=DRAIN_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return result
    try:
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.reacquire()
            seconds, micros = client.time()
            cutoff_ms = int(seconds) * 1000 + int(micros) // 1000 - int(settle_seconds * 1000)
            entries = client.xrange(stream_key(), "-", str(max(cutoff_ms, 0)), count=batch_size)
            if not entries:
                break
            # One transaction per batch: one commit (one WAL flush) for many hits, each hit in its own
            # savepoint. The entries leave the stream only after the commit.
            with transaction.atomic():
                _record_entries(client, entries, result)
            client.xdel(stream_key(), *[_text(entry_id) for entry_id, _ in entries])
            result.read += len(entries)
            if len(entries) < batch_size:
                break
    finally:
        # Expired while we worked: the next drain takes over.
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
    return result


def _record_entries(client: redis.Redis, entries: list[tuple[Any, Any]], result: DrainResult) -> None:
    hits = [(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}) for entry_id, fields in entries]
    pixel_tokens = {f["t"] for _, f in hits if f.get("k") == "o"}
    link_tokens = {f["t"] for _, f in hits if f.get("k") == "c"}
    pixels = {
        p.token: p for p in EmailTrackingPixel.objects.filter(token__in=pixel_tokens).select_related("message__client")
    }
    links = {
        link.token: link
        for link in EmailClickTracking.objects.filter(token__in=link_tokens).select_related("message__client")
    }
    for entry_id, fields in hits:
        facts = machine.HitFacts(
            method=fields.get("m", "GET"),
            user_agent=fields.get("ua", ""),
            ip=fields.get("ip") or None,
            prefetch=fields.get("p") == "1",
        )
        try:
            ts = int(fields.get("ts", "0"))
        except ValueError:
            ts = int(entry_id.split("-", 1)[0])
        occurred_at = datetime.fromtimestamp(ts / 1000.0, UTC)
        dedupe_key = f"trk:{entry_id}"
        try:
            if fields.get("k") == "o" and fields["t"] in pixels:
                recorded = record_open(
                    pixel=pixels[fields["t"]], facts=facts, occurred_at=occurred_at, dedupe_key=dedupe_key
                )
            elif fields.get("k") == "c" and fields["t"] in links:
                link = links[fields["t"]]
                in_burst = _in_burst(
                    client, message_id=str(link.message_id), ip=facts.ip, rid=fields.get("r", ""), ts=ts
                )
                recorded = record_click(
                    link=link, facts=facts, occurred_at=occurred_at, in_burst=in_burst, dedupe_key=dedupe_key
                )
            else:
                result.unknown += 1
                continue
        except (OperationalError, InterfaceError):
            # The database is away: stop here, keep the batch in the stream; the replay is deduplicated.
            raise
        except Exception:
            # One bad hit must not block the stream behind it forever; it is logged and dropped.
            logger.exception("Could not record tracking hit %s", entry_id)
            continue
        result.recorded += int(recorded)
