"""Open and click tracking: the links and pixel put into each message, and recording what comes back.

Two halves:

- **At send time** `prepare_tracked_html` (called by the sending pipeline's message builder)
  rewrites every http(s) link into an opaque click URL, stores the byte-exact original
  destination, fills the `{{unsubscribe_url}}` placeholder and adds one pixel.
- **On the hot path** a pixel queues its hit, already encoded, for this process's hit writer and
  answers; a click reads its destination from the Redis link cache (`GETEX`, on the request
  thread's own connection; the database only on a miss) and queues its hit the same way. The
  writer thread sends what has gathered every `TRACKING_FLUSH_MS` as one pipelined write
  (`XADD` per hit) and records in the database whatever Redis did not acknowledge.
  `drain_tracking_events` (Celery beat; any number side by side through a Redis consumer group)
  takes the hits, noting each click for the burst rule as it takes it, labels them
  (services.machine) and records them in batches through `services.events.record_events_batch`,
  each with the stream entry id as its `dedupe_key`, so a hit replayed after a crash never
  counts twice. Without Redis (the serverless default) the hit is recorded in the request instead.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import html
import ipaddress
import itertools
import logging
import os
import re
import secrets
import socket
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, NamedTuple

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, models, transaction
from django.utils import timezone

from email_service.events.recording import NewEvent, lock_messages, record_event, record_events_batch
from email_service.models import EmailClickTracking, EmailSendQueue, EmailTrackingPixel
from email_service.tracking import machine

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


class _TrackingRows:
    """The pixel and links of one build: reused from an earlier build, or new and written in one go.

    A send retried after an unknown outcome rebuilds the body: the copy that may already be in
    the recipient's inbox must keep working, so the same (position, url) keeps its token and the
    pixel stays the same. A *fresh* build (the first of the message: the claim that fixed its
    Message-ID, before which no build can have run) has nothing to look up, and writes its pixel
    and links in a single statement.
    """

    def __init__(self, message: EmailSendQueue, *, fresh: bool) -> None:
        self.message, self.fresh = message, fresh
        self.new_links: list[EmailClickTracking] = []
        self.new_pixel: EmailTrackingPixel | None = None

    def link_tokens(self, destinations: list[str]) -> list[str]:
        existing: dict[tuple[int, str], str] = {}
        if not self.fresh:
            links = EmailClickTracking.objects.filter(message=self.message)
            existing = {(link.position, link.url): link.token for link in links}
        tokens: list[str] = []
        for position, url in enumerate(destinations):
            token = existing.get((position, url))
            if token is None:
                link = EmailClickTracking(message=self.message, url=url, position=position)
                self.new_links.append(link)
                token = link.token
            tokens.append(token)
        return tokens

    def pixel_token(self) -> str:
        if not self.fresh:
            pixel = EmailTrackingPixel.objects.filter(message=self.message).first()
            if pixel is not None:
                return pixel.token
        self.new_pixel = EmailTrackingPixel(message=self.message)
        return self.new_pixel.token

    def save(self) -> None:
        """Insert the new rows: on PostgreSQL one statement, atomic by itself (no transaction round trips)."""
        now = timezone.now()
        statements: list[tuple[str, list[Any]]] = []
        if self.new_links:
            for link in self.new_links:
                link.created_at = now
            rows = ", ".join([_row_placeholders(_LINK_FIELDS)] * len(self.new_links))
            statements.append(
                (_insert_sql(EmailClickTracking, _LINK_FIELDS) + rows, _values(self.new_links, _LINK_FIELDS))
            )
        if self.new_pixel is not None:
            self.new_pixel.created_at = now
            row = _row_placeholders(_PIXEL_FIELDS)
            statements.append(
                (_insert_sql(EmailTrackingPixel, _PIXEL_FIELDS) + row, _values([self.new_pixel], _PIXEL_FIELDS))
            )
        if len(statements) == 2 and connection.vendor == "postgresql":
            (links, link_params), (pixel, pixel_params) = statements
            statements = [(f"WITH links AS ({links} RETURNING 1) {pixel}", link_params + pixel_params)]
        atomic = transaction.atomic() if len(statements) > 1 else contextlib.nullcontext()
        with atomic, connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
        if self.new_links:
            created = self.new_links
            transaction.on_commit(lambda: cache_links(created))


_LINK_FIELDS = list(EmailClickTracking._meta.concrete_fields)
_PIXEL_FIELDS = list(EmailTrackingPixel._meta.concrete_fields)


def _insert_sql(model: type[models.Model], fields: list[Any]) -> str:
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    return f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES "  # noqa: S608 - names from model metadata


def _row_placeholders(fields: list[Any]) -> str:
    return "(" + ", ".join(["%s"] * len(fields)) + ")"


def _values(objects: list[Any], fields: list[Any]) -> list[Any]:
    return [field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objects for field in fields]


def _pixel_tag(token: str) -> str:
    return (
        f'<img src="{pixel_url(token)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;" />'
    )


def prepare_tracked_html(*, message: EmailSendQueue, html: str, fresh: bool = False) -> str:
    """The body as it goes out: links rewritten to tracked URLs and the open pixel added.

    The seam the sending pipeline's message builder calls for every message. Honours the
    client's `click_tracking`/`open_tracking`; always fills `{{unsubscribe_url}}`. `fresh` says
    this is the message's first build (see `_TrackingRows`): nothing to reuse, nothing looked up.
    """
    client = message.client
    body = html
    rows = _TrackingRows(message, fresh=fresh)
    # A fresh build reads nothing and writes one statement: no transaction needed around it.
    with contextlib.nullcontext() if fresh else transaction.atomic():
        if client.click_tracking:
            body = _rewrite_links(rows, body)
        if client.open_tracking:
            finder = _AnchorFinder(body)
            finder.feed(body)
            finder.close()
            tag = _pixel_tag(rows.pixel_token())
            at = finder.body_end if finder.body_end is not None else len(body)
            body = body[:at] + tag + body[at:]
        rows.save()
    return UNSUBSCRIBE_PLACEHOLDER_RE.sub(unsubscribe_url(message), body)


def _rewrite_links(rows: _TrackingRows, body: str) -> str:
    finder = _AnchorFinder(body)
    finder.feed(body)
    finder.close()
    anchors = [a for a in finder.anchors if is_trackable(a.href.strip(_URL_STRIP))]
    if not anchors:
        return body
    tokens = rows.link_tokens([a.href.strip(_URL_STRIP) for a in anchors])
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


@functools.lru_cache(maxsize=4096)
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
    Also the dashboard's login throttle's notion of "the caller's IP".
    """
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted > 0:
        header = meta.get("HTTP_X_FORWARDED_FOR")
        if isinstance(header, str) and header:
            entries = [entry for entry in header[:2048].split(",") if entry.strip()]
            # Fewer entries than trusted proxies: the request did not come through them all,
            # so every entry may be forged; the socket's address is the only fact left.
            if len(entries) >= trusted:
                return _parse_ip(entries[-trusted])
    remote = meta.get("REMOTE_ADDR")
    return _parse_ip(remote) if isinstance(remote, str) else None


# (WSGI environ key, header name) of the prefetch headers, built once.
_PREFETCH_META: tuple[tuple[str, str], ...] = tuple(
    ("HTTP_" + name.upper().replace("-", "_"), name) for name in machine.PREFETCH_HEADERS
)


def hit_facts(*, method: str, meta: Mapping[str, Any]) -> machine.HitFacts:
    headers = {name: str(value) for key, name in _PREFETCH_META if (value := meta.get(key))}
    user_agent = str(meta.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX]
    return machine.HitFacts(
        method=method,
        user_agent=user_agent,
        ip=client_ip(meta),
        prefetch=bool(headers) and machine.is_prefetch(headers),
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


# A click's destination, cached from the database: "<message id>|<url>". Written when the link is
# created (on commit) and on a cache miss; refreshed on every click. Tokens never expire: a key
# that has expired is simply read from the database again.
LINK_CACHE_TTL_SECONDS = 30 * 24 * 3600


def _link_key(token: str) -> str:
    return _key(f"link:{token}")


def _link_value(*, message_id: object, url: str) -> str:
    return f"{message_id}|{url}"


# ---------------------------------------------------------------------------------------------
# The hot path's Redis calls: commands already encoded, on the calling thread's own connection
# ---------------------------------------------------------------------------------------------
#
# Each thread (a gunicorn request thread reading a click's destination, the hit writer) keeps one
# Redis connection of its own and writes RESP-encoded commands: one `sendall`, then the replies;
# no pool lock, no pipeline object. On any error but an error reply the connection is dropped, so
# the next use starts on a fresh one.

_thread = threading.local()


def _thread_connection(client: redis.Redis) -> Any:
    connections: dict[int, Any] | None = getattr(_thread, "connections", None)
    if connections is None:
        connections = _thread.connections = {}
    conn = connections.get(id(client))
    if conn is None:
        pool = client.connection_pool
        conn = connections[id(client)] = pool.connection_class(**pool.connection_kwargs)
    return conn


def _send(client: redis.Redis, packed: bytes) -> Any:
    """Write packed commands on this thread's connection; returns the connection to read the replies from."""
    conn = _thread_connection(client)
    try:
        conn.send_packed_command([packed], check_health=False)
    except BaseException:
        conn.disconnect()
        raise
    return conn


def _receive(conn: Any) -> Any:
    """Read one reply. A Redis error reply (`ResponseError`) leaves the connection usable; anything
    else (timeout, reset, a half-read reply) drops it, so the next use starts on a fresh connection."""
    try:
        return conn.read_response()
    except redis.ResponseError:
        raise
    except BaseException:
        conn.disconnect()
        raise


def _call(client: redis.Redis, packed: bytes) -> Any:
    """Send one packed command on this thread's connection and return Redis's reply."""
    return _receive(_send(client, packed))


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _encode(value: str) -> bytes:
    # WSGI header values are latin-1 strings; `replace` so no header can make the encoding fail.
    return value.encode("utf-8", "replace")


_packed_keys: dict[str, tuple[bytes, bytes]] = {}


def _packed_key_parts() -> tuple[bytes, bytes]:
    """(stream key, link key prefix) as bytes, for the current key prefix."""
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "oree")
    parts = _packed_keys.get(prefix)
    if parts is None:
        parts = _packed_keys[prefix] = (stream_key().encode(), _key("link:").encode())
    return parts


_BULK_LINK_TTL = _bulk(str(LINK_CACHE_TTL_SECONDS).encode())


# The hit's fields after `k` (h, t, m, ua, ip, p, ts, in the order `_hit_fields` lists them),
# RESP-encoded by one formatting operation: this runs for every pixel and click.
_FIELDS = (
    b"$1\r\nh\r\n$%d\r\n%b\r\n$1\r\nt\r\n$%d\r\n%b\r\n$1\r\nm\r\n$%d\r\n%b\r\n"
    b"$2\r\nua\r\n$%d\r\n%b\r\n$2\r\nip\r\n$%d\r\n%b\r\n$1\r\np\r\n$1\r\n%b\r\n$2\r\nts\r\n$%d\r\n%b\r\n"
)


def _packed_fields(hit_id: bytes, token: bytes, facts: machine.HitFacts, ts: bytes) -> bytes:
    method, user_agent, ip = facts.method.encode(), _encode(facts.user_agent), (facts.ip or "").encode()
    prefetch = b"1" if facts.prefetch else b"0"
    return _FIELDS % (
        len(hit_id), hit_id, len(token), token, len(method), method, len(user_agent), user_agent,
        len(ip), ip, prefetch, len(ts), ts,
    )  # fmt: skip


def _hit_fields(kind: str, token: str, facts: machine.HitFacts, *, message_id: str = "") -> dict[str, str | int]:
    """A hit's stream fields as a mapping, as the hot path writes them (tests and the drain benchmark)."""
    fields: dict[str, str | int] = {
        "k": kind,
        "h": _writer().next_id().decode(),
        "t": token,
        "m": facts.method,
        "ua": facts.user_agent,
        "ip": facts.ip or "",
        "p": int(facts.prefetch),
        "ts": _now_ms(),
    }
    if kind == "c":
        fields["g"] = message_id
    return fields


# ---------------------------------------------------------------------------------------------
# The hit writer: hits leave the request in a per-process queue, Redis gets them in batches
# ---------------------------------------------------------------------------------------------
#
# A round trip to Redis per hit (write, then wait for Redis's answer) is what made recording cost
# a fifth to a third of the pixel's throughput (bench/tracking/README.md): the answer is waited for
# in the request, and each trip wakes Redis and the request's thread. So a request only appends its
# hit, already encoded, to this process's queue and answers; one writer thread per process sends
# what has gathered every `TRACKING_FLUSH_MS` as one pipelined write and reads the answers. A hit
# Redis refuses or cannot take (down, connection lost) is recorded in the database by the writer.
# The queue is written out when the process exits normally (gunicorn's graceful restarts), so what
# a hard kill (SIGKILL, the OOM killer) can cost is the hits of the last `TRACKING_FLUSH_MS`: the same
# kind of window as Redis's own `appendfsync everysec` (up to a second), a hundred times shorter.
# `TRACKING_FLUSH_MS=0` writes each hit in its request and waits for Redis's answer (the tests).


class _Hit(NamedTuple):
    """One hit on its way to the stream: its commands (packed), its fallback in the database."""

    commands: bytes  # one XADD
    kind: str  # "o": an open; "c": a click
    hit_id: bytes  # unique: the event's dedupe key, whichever way the hit is recorded
    token: str
    facts: machine.HitFacts

    def record_in_database(self) -> None:
        # An XADD whose answer was lost (the connection closed under it) may still be in the stream:
        # the drain records it under the same dedupe key, so the hit counts once either way.
        dedupe_key = _dedupe_key(self.hit_id.decode())
        if self.kind == "o":
            record_open_now(token=self.token, facts=self.facts, dedupe_key=dedupe_key)
        else:
            link = find_link(self.token)
            if link is not None:
                record_click_now(link=link, facts=self.facts, dedupe_key=dedupe_key)


def _dedupe_key(hit_id: str) -> str:
    return f"trk:{hit_id}"


class _HitWriter:
    """This process's queue of hits and the thread that writes them to Redis."""

    def __init__(self) -> None:
        self.queue: collections.deque[_Hit] = collections.deque()
        self.wake = threading.Event()
        self.writing = threading.Lock()  # one batch at a time: the thread, an exit, a test
        self.started = threading.Lock()
        self.thread: threading.Thread | None = None
        self.unavailable_until = 0.0  # time.monotonic() before which Redis is taken to be away
        # Hit ids: this process's random prefix and a count (no system call per hit).
        self.id_prefix = secrets.token_hex(8).encode()
        self.ids = itertools.count()

    def next_id(self) -> bytes:
        return b"%b%x" % (self.id_prefix, next(self.ids))

    def put(self, hit: _Hit) -> bool:
        """Queue the hit (True), or refuse it (False: the caller records it in the request) while Redis
        is away or the queue is full, so an outage slows requests down instead of growing the queue."""
        if len(self.queue) >= QUEUE_LIMIT or time.monotonic() < self.unavailable_until:
            return False
        self.queue.append(hit)
        if settings.TRACKING_FLUSH_MS <= 0:
            self.flush()
            return True
        if self.thread is None:
            self._start()
        if not self.wake.is_set():
            self.wake.set()
        return True

    def _start(self) -> None:
        with self.started:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="tracking-hit-writer", daemon=True)
                self.thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(settings.TRACKING_FLUSH_MS / 1000)  # let the batch gather
            self.wake.clear()
            try:
                self.flush()
            except Exception:
                logger.exception("Could not write tracking hits")
            finally:
                if self.queue and not self.wake.is_set():
                    self.wake.set()

    def flush(self) -> None:
        """Write everything queued so far; returns once Redis (or the database) has each hit."""
        with self.writing:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), WRITE_BATCH))]
                self._write(batch)

    def _write(self, batch: list[_Hit]) -> None:
        """One pipelined write of the batch. A hit whose `XADD` Redis did not acknowledge goes to the
        database instead; one it did is never written again."""
        client = _redis()
        acknowledged = 0  # hits whose XADD answer has been read, in order
        failed: list[_Hit] = []
        if client is not None:
            try:
                conn = _send(client, b"".join(hit.commands for hit in batch))
                for hit in batch:
                    try:
                        _receive(conn)
                    except redis.ResponseError:
                        failed.append(hit)
                    acknowledged += 1
            except Exception:
                # The connection broke (and was dropped): the unanswered rest goes to the database.
                logger.warning("Tracking buffer unavailable", exc_info=True)
                if settings.TRACKING_FLUSH_MS > 0:  # (at 0 each request waits for Redis itself)
                    self.unavailable_until = time.monotonic() + UNAVAILABLE_SECONDS
        failed.extend(batch[acknowledged:])
        if not failed:
            return
        logger.warning("Recording %d tracking hits in the database instead of the buffer", len(failed))
        for hit in failed:
            _record_in_database(hit)
        if threading.current_thread() is self.thread:
            connection.close()  # the writer thread's own database connection: it may idle for hours


def _record_in_database(hit: _Hit, attempts: int = 3) -> None:
    """Record a hit Redis did not acknowledge, trying again after a deadlock: the drain may be
    recording the same hit (Redis took it after all) with the messages of its batch locked."""
    for attempt in range(1, attempts + 1):
        try:
            hit.record_in_database()
            return
        except OperationalError:
            if attempt == attempts or connection.in_atomic_block:
                logger.exception("Could not record a tracking hit")
                return
            time.sleep(0.05 * attempt)
        except Exception:
            logger.exception("Could not record a tracking hit")
            return


WRITE_BATCH = 500
# Hits one process may hold (about ten seconds of a busy worker); beyond it each is recorded in its request.
QUEUE_LIMIT = 20_000
# After Redis could not take a batch, hits are recorded in their requests for this long.
UNAVAILABLE_SECONDS = 1.0
_writers: dict[int, _HitWriter] = {}


def _writer() -> _HitWriter:
    """This process's writer (a forked child gets its own: the parent's thread did not come along)."""
    writer = _writers.get(os.getpid())
    if writer is None:
        writer = _writers.setdefault(os.getpid(), _HitWriter())
    return writer


def flush_hits() -> None:
    """Write out this process's queued hits now (tests, benchmarks, shutdown)."""
    _writer().flush()


# XADD <stream> * k o <fields>
_OPEN_XADD = b"*19\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$1\r\n*\r\n$1\r\nk\r\n$1\r\no\r\n%b"


def buffer_open(*, token: str, facts: machine.HitFacts) -> bool:
    """Hand one pixel fetch to the drain's buffer (one `XADD`, written by the hit writer).

    False without Redis, or while the writer refuses hits: the caller records in the request.
    """
    if _redis() is None:
        return False
    stream, _ = _packed_key_parts()
    writer = _writer()
    hit_id = writer.next_id()
    fields = _packed_fields(hit_id, token.encode(), facts, str(_now_ms()).encode())
    commands = _OPEN_XADD % (len(stream), stream, fields)
    return writer.put(_Hit(commands=commands, kind="o", hit_id=hit_id, token=token, facts=facts))


@dataclass(frozen=True)
class ClickOutcome:
    """What a click request learnt: where to send the browser (None: unknown link) and whether the hit is buffered."""

    url: str | None
    buffered: bool
    link: EmailClickTracking | None = None


# XADD <stream> * k c <fields> g <message id>. The burst note is the drain's to write (`_DELIVER`):
# the request only records.
_CLICK_XADD = b"*21\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$1\r\n*\r\n$1\r\nk\r\n$1\r\nc\r\n%b$1\r\ng\r\n$%d\r\n%b\r\n"


def _click_commands(
    keys: tuple[bytes, bytes], hit_id: bytes, token: str, message_id: str, facts: machine.HitFacts
) -> bytes:
    """The click's `XADD`: its facts and its message (for the drain's burst note)."""
    stream, _ = keys
    message = message_id.encode()
    fields = _packed_fields(hit_id, token.encode(), facts, str(_now_ms()).encode())
    return _CLICK_XADD % (len(stream), stream, fields, len(message), message)


def _getex_link(link_prefix: bytes, token: str) -> bytes:
    """`GETEX <link key> EX <30 days>`: the cached destination, its TTL renewed by the click."""
    return b"*4\r\n$5\r\nGETEX\r\n" + _bulk(link_prefix + token.encode()) + b"$2\r\nEX\r\n" + _BULK_LINK_TTL


def track_click(*, token: str, facts: machine.HitFacts) -> ClickOutcome:
    """The click's destination from the Redis link cache (the database on a miss); its hit to the writer.

    Without Redis (or with Redis down) the destination comes from the database and `buffered` is
    False: the caller records the click in the request. An unknown token is `url=None`, nothing buffered.
    """
    if not TOKEN_RE.match(token):
        return ClickOutcome(url=None, buffered=False)
    client = _redis()
    if client is not None:
        keys = _packed_key_parts()
        try:
            value = _call(client, _getex_link(keys[1], token))
        except redis.RedisError:
            logger.warning("Tracking buffer unavailable; recording in the request instead")
        else:
            if isinstance(value, bytes):
                message_id, _, url = value.decode("utf-8").partition("|")
            else:
                # Not cached (yet): the database knows, and fills the cache for the next click.
                link = find_link(token)
                if link is None or not is_trackable(link.url):
                    return ClickOutcome(url=None, buffered=False)  # only http(s) is ever redirected to
                cache_links([link])
                message_id, url = str(link.message_id), link.url
            writer = _writer()
            hit_id = writer.next_id()
            commands = _click_commands(keys, hit_id, token, message_id, facts)
            if writer.put(_Hit(commands=commands, kind="c", hit_id=hit_id, token=token, facts=facts)):
                return ClickOutcome(url=url, buffered=True)
            # The writer refuses hits for now: the caller records this one in the request.
            return ClickOutcome(
                url=url, buffered=False, link=EmailClickTracking(token=token, url=url, message_id=message_id)
            )
    link = find_link(token)
    return ClickOutcome(url=link.url if link else None, buffered=False, link=link)


def cache_links(links: list[EmailClickTracking]) -> None:
    """Write the links' destinations into the click cache (best effort: a miss reads the database)."""
    client = _redis()
    if client is None or not links:
        return
    pipe = client.pipeline(transaction=False)
    # Only what a click may redirect to is cached; anything else stays a 404 through the database.
    for link in (link for link in links if is_trackable(link.url)):
        pipe.set(
            _link_key(link.token), _link_value(message_id=link.message_id, url=link.url), ex=LINK_CACHE_TTL_SECONDS
        )
    try:
        pipe.execute()
    except redis.RedisError:
        logger.warning("Click cache unavailable; clicks will read the database")


def cached_destination(token: str) -> str | None:
    """The destination as a click reads it (Redis, else the database), recording nothing: the benchmark's baseline."""
    client = _redis()
    if client is not None and TOKEN_RE.match(token):
        # The same command, connection and encoding as the click's lookup: only the recording differs.
        value = _call(client, _getex_link(_packed_key_parts()[1], token))
        if isinstance(value, bytes):
            return value.decode("utf-8").partition("|")[2]
    link = find_link(token)
    return link.url if link else None


def find_link(token: str) -> EmailClickTracking | None:
    """The tracked link behind a click token, from the database (the only source of a redirect's destination)."""
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


def record_open_now(*, token: str, facts: machine.HitFacts, dedupe_key: str | None = None) -> None:
    """The in-request fallback when the buffer is unavailable."""
    if not TOKEN_RE.match(token):
        return
    pixel = EmailTrackingPixel.objects.filter(token=token).select_related("message__client").first()
    if pixel is not None:
        record_open(pixel=pixel, facts=facts, occurred_at=datetime.now(UTC), dedupe_key=dedupe_key)


def record_click_now(*, link: EmailClickTracking, facts: machine.HitFacts, dedupe_key: str | None = None) -> None:
    """The in-request fallback when the buffer is unavailable (the burst rule needs the buffer)."""
    full = EmailClickTracking.objects.select_related("message__client").get(pk=link.pk)
    record_click(link=full, facts=facts, occurred_at=datetime.now(UTC), dedupe_key=dedupe_key)


# ---------------------------------------------------------------------------------------------
# The drain
# ---------------------------------------------------------------------------------------------

# A click is labelled once the buffer has taken hits this much newer than it, so every click of a
# possible burst has been taken, and noted, by then (the burst window, plus the hit writer's delay).
DRAIN_SETTLE_SECONDS = machine.BURST_WINDOW_SECONDS + 0.5
DRAIN_GROUP = "drain"
# Hits a drain took and did not acknowledge for this long (it died) are taken over by another.
DRAIN_CLAIM_IDLE_MS = 60_000


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class DrainResult:
    read: int = 0
    recorded: int = 0
    unknown: int = 0


def _consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


# Hands a drain the next hits (`XREADGROUP ... >`) and, in the same atomic step, writes the burst note
# of each click among them: a sorted set per message and source, scored by the click's time. So
# every hit any drain has taken is noted, and a click is labelled only once the group has taken every
# hit up to `DRAIN_SETTLE_SECONDS` after it (`drain_tracking_events`). A note's member is
# "<link token>|<entry id>". The notes' keys are not among the script's KEYS: one Redis, not Cluster
# (README, "Operating"). Returns Redis's clock (TIME) as of the read, and the entries as
# [id, [field, value, ...]].
_DELIVER = """
local now = redis.call('TIME')
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
local entries = {}
if reply then entries = reply[1][2] end
for _, entry in ipairs(entries) do
  local flat, hit = entry[2], {}
  for i = 1, #flat, 2 do hit[flat[i]] = flat[i + 1] end
  local at = tonumber(hit.ts)
  if hit.k == 'c' and hit.g and hit.t and at then
    local source = hit.ip
    if source == nil or source == '' then source = '-' end
    local key = ARGV[4] .. hit.g .. ':' .. source
    redis.call('ZADD', key, at, hit.t .. '|' .. entry[1])
    redis.call('EXPIRE', key, ARGV[5])
  end
end
return {now[1], now[2], entries}
"""


def _deliver(client: redis.Redis, consumer: str, count: int) -> tuple[int, list[tuple[Any, dict[Any, Any]]]]:
    """(Redis's clock in ms, the next `count` hits no drain has taken yet), their burst notes written."""
    seconds, micros, entries = client.register_script(_DELIVER)(
        keys=[stream_key()],
        args=[DRAIN_GROUP, consumer, count, _key("burst:"), BURST_KEY_TTL_SECONDS],
    )
    hits = [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in entries]
    return int(seconds) * 1000 + int(micros) // 1000, hits


def _ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(stream_key(), DRAIN_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The (id, fields) pairs of an XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [
            entry
            for entries in reply.values()
            for entry in (entries[0] if entries and isinstance(entries[0], list) else entries)
        ]
    return [entry for _stream, entries in reply for entry in entries]


def drain_tracking_events(
    *, batch_size: int = 1000, settle_seconds: float = DRAIN_SETTLE_SECONDS, max_seconds: float = 50.0
) -> DrainResult:
    """Record buffered hits, oldest first, until none are left or time is up; a click once the group has
    taken every hit up to `settle_seconds` after it (so its burst is noted whole).

    Each round reads up to `batch_size` hits this drain holds and `batch_size` new ones. Any number
    of drains run side by side: a Redis consumer group hands each hit to one of them;
    a hit is acknowledged and deleted only after its batch committed, and hits a dead drain had
    taken are claimed by another after `DRAIN_CLAIM_IDLE_MS`. Each hit is recorded with
    `dedupe_key=trk:<hit id>`, so a hit recorded twice (a drain that died between commit and
    acknowledgement; a web process that recorded it in the database when Redis's answer to its
    `XADD` was lost) counts once.
    """
    result = DrainResult()
    client = _redis()
    if client is None:
        return result
    stream = stream_key()
    consumer = _consumer_name()
    _ensure_group(client)
    # Hits of drains that died are ours now; they come back below with our own unacknowledged ones.
    client.xautoclaim(stream, DRAIN_GROUP, consumer, min_idle_time=DRAIN_CLAIM_IDLE_MS, count=batch_size, justid=True)
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline:
            # Ours first: clicks that were not settled last round, and hits taken over from dead drains.
            own = _entries(client.xreadgroup(DRAIN_GROUP, consumer, {stream: "0"}, count=batch_size))
            now_ms, new = _deliver(client, consumer, batch_size)
            # The group has handed out (and noted) every hit up to the newest one read, or up to now
            # when none were left: a click settles once that is `settle_seconds` past it.
            taken_ms = now_ms if len(new) < batch_size else _entry_ms(new[-1][0])
            cutoff_ms = taken_ms - int(settle_seconds * 1000)
            # Clicks not settled yet stay with this drain, unacknowledged, for its next round.
            ready = [(entry_id, fields) for entry_id, fields in own + new if _settled(entry_id, fields, cutoff_ms)]
            if ready:
                _record_safely(client, ready, result)
                ids = [_text(entry_id) for entry_id, _ in ready]
                pipe = client.pipeline(transaction=False)
                pipe.xack(stream, DRAIN_GROUP, *ids)
                pipe.xdel(stream, *ids)
                pipe.execute()
                result.read += len(ready)
            if not new and len(ready) < len(own) + len(new):
                break  # only unsettled clicks left
            if not new and not own:
                break
    finally:
        _forget_idle_consumers(client)
    return result


def _record_safely(client: redis.Redis, entries: list[tuple[Any, Any]], result: DrainResult) -> None:
    """Record a batch; when one bad hit spoils it, record the hits one by one and drop (log) the bad ones."""
    try:
        _record_entries(client, entries, result)
    except (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError):
        # The database or Redis is away: keep the batch unacknowledged; the replay is deduplicated.
        raise
    except Exception:
        if len(entries) == 1:
            logger.exception("Could not record tracking hit %s", _text(entries[0][0]))
            return
        for entry in entries:
            _record_safely(client, [entry], result)


def _entry_ms(entry_id: Any) -> int:
    """When Redis added a stream entry (its id's first part, ms by Redis's clock)."""
    return int(_text(entry_id).split("-", 1)[0])


def _settled(entry_id: Any, fields: Any, cutoff_ms: int) -> bool:
    """Opens are ready at once; a click once it entered the buffer (by Redis's clock) before the cutoff."""
    if not fields or _text(fields.get(b"k", fields.get("k", ""))) != "c":
        return True
    return _entry_ms(entry_id) <= cutoff_ms


def _forget_idle_consumers(client: redis.Redis) -> None:
    """Drop consumers (drain processes gone long ago) with nothing pending, so the group stays small."""
    with contextlib.suppress(redis.RedisError):
        for info in client.xinfo_consumers(stream_key(), DRAIN_GROUP):
            name, pending, idle = info.get("name"), info.get("pending", 0), info.get("idle", 0)
            if pending == 0 and idle > 3600_000 and name is not None:
                client.xgroup_delconsumer(stream_key(), DRAIN_GROUP, name)


def _in_bursts(client: redis.Redis, clicks: list[tuple[str, str | None, str, int]]) -> list[bool]:
    """For each (message id, ip, entry id, ms) whether it belongs to a burst: one pipelined round trip."""
    if not clicks:
        return []
    window_ms = int(machine.BURST_WINDOW_SECONDS * 1000)
    pipe = client.pipeline(transaction=False)
    for message_id, ip, _rid, ts in clicks:
        pipe.zrangebyscore(_burst_key(message_id, ip), ts - window_ms, ts + window_ms, withscores=True)
    answers = []
    for (_m, _ip, rid, _ts), rows in zip(clicks, pipe.execute(), strict=True):
        members = []
        for member, score in rows:
            link, _, entry_id = _text(member).partition("|")
            members.append((float(score) / 1000.0, link, entry_id))
        answers.append(rid in machine.burst_members(members))
    return answers


def _record_entries(client: redis.Redis, entries: list[tuple[Any, Any]], result: DrainResult) -> None:
    """Label and record one batch of hits in one transaction (events.record_events_batch)."""
    hits = [(_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()}) for entry_id, fields in entries]
    pixel_tokens = {f["t"] for _, f in hits if f.get("k") == "o" and "t" in f}
    link_tokens = {f["t"] for _, f in hits if f.get("k") == "c" and "t" in f}
    pixel_messages = dict(EmailTrackingPixel.objects.filter(token__in=pixel_tokens).values_list("token", "message_id"))
    link_messages = dict(EmailClickTracking.objects.filter(token__in=link_tokens).values_list("token", "message_id"))
    parsed: list[tuple[str, dict[str, str], Any, machine.HitFacts, int]] = []
    for entry_id, fields in hits:
        kind, token = fields.get("k"), fields.get("t", "")
        message_id = pixel_messages.get(token) if kind == "o" else link_messages.get(token) if kind == "c" else None
        if message_id is None:
            result.unknown += 1
            continue
        facts = machine.HitFacts(
            method=fields.get("m", "GET"),
            user_agent=fields.get("ua", ""),
            ip=fields.get("ip") or None,
            prefetch=fields.get("p") == "1",
        )
        try:
            ts = int(fields.get("ts", ""))
        except ValueError:
            ts = int(entry_id.split("-", 1)[0])
        parsed.append((entry_id, fields, message_id, facts, ts))
    clicks = [(str(m), facts.ip, entry_id, ts) for entry_id, fields, m, facts, ts in parsed if fields["k"] == "c"]
    bursts = iter(_in_bursts(client, clicks))
    with transaction.atomic():
        messages = lock_messages(ids={message_id for _, _, message_id, _, _ in parsed})
        batch: list[NewEvent] = []
        for entry_id, fields, message_id, facts, ts in parsed:
            message = messages.get(message_id)
            in_burst = next(bursts) if fields["k"] == "c" else False
            if message is None:
                result.unknown += 1
                continue
            occurred_at = datetime.fromtimestamp(ts / 1000.0, UTC)
            if fields["k"] == "o":
                event_type = "open"
                verdict = machine.classify_open(facts=facts, occurred_at=occurred_at, sent_at=message.sent_at)
                extra: dict[str, Any] = {}
            else:
                event_type = "click"
                verdict = machine.classify_click(
                    facts=facts, occurred_at=occurred_at, sent_at=message.sent_at, in_burst=in_burst
                )
                extra = {"link_id": fields["t"]}
            batch.append(
                NewEvent(
                    message=message,
                    event_type=event_type,
                    occurred_at=occurred_at,
                    is_machine=verdict.is_machine,
                    machine_reason=verdict.reason,
                    # Hits written before hit ids existed fall back on their entry id.
                    dedupe_key=_dedupe_key(fields.get("h") or entry_id),
                    fields={
                        "ip": facts.ip,
                        "user_agent": facts.user_agent,
                        "detail": {"method": facts.method},
                        **extra,
                    },
                )
            )
        created = record_events_batch(events=batch, follow_up=_implied_open)
    result.recorded += sum(1 for event in created if not (event.dedupe_key or "").startswith("implied-open:"))


def _implied_open(event: NewEvent) -> NewEvent | None:
    """A person's click on a message with no person's open yet: they read it (images blocked). One per message."""
    message = event.message
    if event.event_type != "click" or event.is_machine or message.first_opened_at is not None:
        return None
    fields = event.fields or {}
    return NewEvent(
        message=message,
        event_type="open",
        occurred_at=event.occurred_at,
        dedupe_key=f"implied-open:{message.pk}",
        fields={
            "ip": fields.get("ip"),
            "user_agent": fields.get("user_agent", ""),
            "detail": {"implied_by_click": True},
        },
    )
