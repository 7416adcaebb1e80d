"""Telling people from machines: every rule and every list that labels an open or a click.

The tracking endpoints always answer; these rules only decide the label an event carries
(`is_machine` and a short reason), so a dashboard shows what people did and, apart, what
scanners and privacy proxies did. Changing what counts as a machine happens here and nowhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

# Reasons, stored in EmailEvent.machine_reason (stable strings: dashboards may group by them).
HEAD_REQUEST = "head_request"
PREFETCH = "prefetch"
SCANNER_USER_AGENT = "scanner_user_agent"
EMPTY_USER_AGENT = "empty_user_agent"
APPLE_MPP = "apple_mpp"
TOO_SOON_AFTER_SEND = "too_soon_after_send"
CLICK_BURST = "click_burst"

# Request headers browsers and mail clients send when they fetch ahead of a person: the value
# names the purpose (Chrome `Sec-Purpose: prefetch`, old `Purpose: prefetch`, Safari `X-Purpose:
# preview`, Firefox `X-Moz: prefetch`).
PREFETCH_HEADERS: tuple[str, ...] = ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz")
PREFETCH_VALUES: tuple[str, ...] = ("prefetch", "preview", "prerender")

# Lower-case substrings of user agents of link scanners, security gateways and HTTP tools.
SCANNER_USER_AGENT_MARKERS: tuple[str, ...] = (
    # Security gateways and link rewriters.
    "safelinks",
    "safe links",
    "microsoft office protection",
    "urldefense",
    "proofpoint",
    "ppops",
    "mimecast",
    "barracuda",
    "symantec",
    "messagelabs",
    "forcepoint",
    "trendmicro",
    "trend micro",
    "sophos",
    "cisco",
    "ironport",
    "fireeye",
    "zscaler",
    "checkpoint",
    "bingpreview",
    # HTTP libraries and command-line tools.
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "headlesschrome",
    "phantomjs",
    # Crawlers.
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "scanner",
)

# Proxies that fetch images only when a person opens the message: a person, whatever else
# their user agent says.
HUMAN_IMAGE_PROXY_MARKERS: tuple[str, ...] = ("googleimageproxy",)

# Apple Mail Privacy Protection fetches every remote image on delivery from Apple's network,
# with a bare "Mozilla/5.0" user agent: a proof of delivery, never a person's open.
APPLE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_MPP_USER_AGENTS: frozenset[str] = frozenset({"mozilla/5.0"})

# Three or more links of one message clicked from one source within two seconds is a scanner
# walking the message; every click of the burst is labelled.
BURST_MIN_LINKS = 3
BURST_WINDOW_SECONDS = 2.0


@dataclass(frozen=True)
class Verdict:
    """A label: `is_machine` and why (empty reason for a person)."""

    is_machine: bool
    reason: str = ""


HUMAN = Verdict(False)


@dataclass(frozen=True)
class HitFacts:
    """What a tracking request tells us, taken from the request on the hot path."""

    method: str
    user_agent: str
    ip: str | None
    prefetch: bool


def is_prefetch(headers: Mapping[str, str]) -> bool:
    """True when one of the prefetch headers names a prefetch or preview (`headers` keyed as sent)."""
    for name in PREFETCH_HEADERS:
        value = headers.get(name)
        if value and any(marker in value.lower() for marker in PREFETCH_VALUES):
            return True
    return False


def is_gmail_image_proxy(user_agent: str) -> bool:
    lowered = user_agent.lower()
    return any(marker in lowered for marker in HUMAN_IMAGE_PROXY_MARKERS)


def scanner_reason(user_agent: str) -> str | None:
    """The reason a user agent is a machine's, or None."""
    stripped = user_agent.strip()
    if not stripped:
        return EMPTY_USER_AGENT
    lowered = stripped.lower()
    if any(marker in lowered for marker in HUMAN_IMAGE_PROXY_MARKERS):
        return None
    if any(marker in lowered for marker in SCANNER_USER_AGENT_MARKERS):
        return SCANNER_USER_AGENT
    return None


def is_apple_mpp(*, user_agent: str, ip: str | None) -> bool:
    if user_agent.strip().lower() in APPLE_MPP_USER_AGENTS:
        return True
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in APPLE_NETWORKS)


def _too_soon(*, occurred_at: datetime, sent_at: datetime | None, window_seconds: int) -> bool:
    if window_seconds <= 0 or sent_at is None:
        return False
    return occurred_at - sent_at < timedelta(seconds=window_seconds)


def _request_verdict(facts: HitFacts) -> Verdict | None:
    if facts.method.upper() == "HEAD":
        return Verdict(True, HEAD_REQUEST)
    if facts.prefetch:
        return Verdict(True, PREFETCH)
    reason = scanner_reason(facts.user_agent)
    if reason:
        return Verdict(True, reason)
    return None


def classify_open(*, facts: HitFacts, occurred_at: datetime, sent_at: datetime | None) -> Verdict:
    """Label one pixel fetch."""
    verdict = _request_verdict(facts)
    if verdict:
        return verdict
    if not is_gmail_image_proxy(facts.user_agent) and is_apple_mpp(user_agent=facts.user_agent, ip=facts.ip):
        return Verdict(True, APPLE_MPP)
    if _too_soon(occurred_at=occurred_at, sent_at=sent_at, window_seconds=settings.MACHINE_OPEN_WINDOW_SECONDS):
        return Verdict(True, TOO_SOON_AFTER_SEND)
    return HUMAN


def classify_click(
    *, facts: HitFacts, occurred_at: datetime, sent_at: datetime | None, in_burst: bool = False
) -> Verdict:
    """Label one tracked-link click; `in_burst` comes from `burst_members`."""
    verdict = _request_verdict(facts)
    if verdict:
        return verdict
    if in_burst:
        return Verdict(True, CLICK_BURST)
    if _too_soon(occurred_at=occurred_at, sent_at=sent_at, window_seconds=settings.MACHINE_CLICK_WINDOW_SECONDS):
        return Verdict(True, TOO_SOON_AFTER_SEND)
    return HUMAN


def burst_members(clicks: Iterable[tuple[float, str, str]]) -> set[str]:
    """Which clicks belong to a burst: `clicks` are (seconds, link token, click id) from one source.

    A click is in a burst when some window of `BURST_WINDOW_SECONDS` holding it holds clicks on at
    least `BURST_MIN_LINKS` different links of the message. Returns the click ids of all of them.
    """
    ordered = sorted(clicks)
    members: set[str] = set()
    start = 0
    for end in range(len(ordered)):
        while ordered[end][0] - ordered[start][0] > BURST_WINDOW_SECONDS:
            start += 1
        window = ordered[start : end + 1]
        if len({link for _, link, _ in window}) >= BURST_MIN_LINKS:
            members.update(click_id for _, _, click_id in window)
    return members
