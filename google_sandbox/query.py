"""The subset of Gmail's search language (``q=``) that the sandbox understands.

Terms are combined with AND; a leading ``-`` negates a term. Supported:
``rfc822msgid:``, ``to:``, ``from:``, ``cc:``, ``bcc:``, ``subject:``, ``in:``,
``label:``, ``is:unread|read|starred``, ``newer_than:``/``older_than:`` (``Nd``,
``Nh``, ``Nm`` months, ``Ny``), ``after:``/``before:`` (epoch seconds or
``YYYY/MM/DD``, taken as UTC), and bare words or quoted phrases matched against
subject and body. Anything else is rejected with :class:`QueryError` rather than
silently ignored, so a test never passes on a filter the sandbox did not apply.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_TOKEN_RE = re.compile(r'(-?)(?:([A-Za-z_][A-Za-z0-9_]*):)?("(?:[^"]*)"|\S+)')
_AGE_RE = re.compile(r"^(\d+)([dhmy])$")
_AGE_SECONDS = {"h": 3600, "d": 86400, "m": 30 * 86400, "y": 365 * 86400}
_IN_LABELS = {
    "inbox": "INBOX",
    "sent": "SENT",
    "trash": "TRASH",
    "spam": "SPAM",
    "draft": "DRAFT",
    "drafts": "DRAFT",
    "starred": "STARRED",
    "important": "IMPORTANT",
}


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Searchable:
    """What a query looks at in a message."""

    label_ids: frozenset[str]
    headers: list[tuple[str, str]]
    addresses: dict[str, list[tuple[str, str]]]  # header (lower) -> (name, address)
    text: str  # subject and bodies, lower-cased
    internal_date_ms: int
    message_id: str | None


Predicate = Callable[[Searchable], bool]


def _strip_brackets(value: str) -> str:
    return value.strip().strip("<>").strip().lower()


def _address_pred(header: str, needle: str) -> Predicate:
    needle = needle.lower()

    def pred(m: Searchable) -> bool:
        return any(needle in addr.lower() or needle in name.lower() for name, addr in m.addresses.get(header, []))

    return pred


def _multi_address_pred(headers: tuple[str, ...], needle: str) -> Predicate:
    preds = [_address_pred(h, needle) for h in headers]
    return lambda m: any(p(m) for p in preds)


def _parse_epoch(value: str) -> float:
    if value.isdigit():
        return float(value)
    match = re.match(r"^(\d{4})[/-](\d{1,2})[/-](\d{1,2})$", value)
    if not match:
        raise QueryError(f"bad date {value!r}")
    year, month, day = (int(g) for g in match.groups())
    return float(calendar.timegm((year, month, day, 0, 0, 0)))


def _age(value: str) -> float:
    match = _AGE_RE.match(value.lower())
    if not match:
        raise QueryError(f"bad age {value!r} (want Nd, Nh, Nm or Ny)")
    return int(match.group(1)) * _AGE_SECONDS[match.group(2)]


def _term(op: str | None, value: str, now: float) -> Predicate:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if op is None:
        needle = value.lower()
        return lambda m: needle in m.text
    op = op.lower()
    if op == "rfc822msgid":
        wanted = _strip_brackets(value)
        return lambda m: m.message_id is not None and _strip_brackets(m.message_id) == wanted
    if op == "to":
        return _multi_address_pred(("to", "cc", "bcc"), value)
    if op in ("from", "cc", "bcc"):
        return _address_pred(op, value)
    if op == "subject":
        needle = value.lower()
        return lambda m: any(k.lower() == "subject" and needle in v.lower() for k, v in m.headers)
    if op == "in":
        if value.lower() == "anywhere":
            return lambda m: True
        label = _IN_LABELS.get(value.lower())
        if label is None:
            raise QueryError(f"unsupported in:{value}")
        return lambda m: label in m.label_ids
    if op == "label":
        label = value.upper()
        return lambda m: label in m.label_ids
    if op == "is":
        flag = value.lower()
        if flag == "unread":
            return lambda m: "UNREAD" in m.label_ids
        if flag == "read":
            return lambda m: "UNREAD" not in m.label_ids
        if flag == "starred":
            return lambda m: "STARRED" in m.label_ids
        raise QueryError(f"unsupported is:{value}")
    if op in ("newer_than", "older_than"):
        cutoff_ms = (now - _age(value)) * 1000
        if op == "newer_than":
            return lambda m: m.internal_date_ms > cutoff_ms
        return lambda m: m.internal_date_ms < cutoff_ms
    if op in ("after", "before"):
        edge_ms = _parse_epoch(value) * 1000
        if op == "after":
            return lambda m: m.internal_date_ms >= edge_ms
        return lambda m: m.internal_date_ms < edge_ms
    raise QueryError(f"the sandbox does not support the search operator {op}:")


def _negated(pred: Predicate) -> Predicate:
    return lambda m: not pred(m)


def compile_query(q: str | None, now: float | None = None) -> Predicate:
    """Compile ``q`` into a predicate; raise :class:`QueryError` when unsupported."""
    if not q or not q.strip():
        return lambda m: True
    moment = time.time() if now is None else now
    preds: list[Predicate] = []
    for negate, op, value in _TOKEN_RE.findall(q):
        if not op and value.upper() in ("AND",):
            continue
        if not op and value.upper() == "OR":
            raise QueryError("the sandbox does not support OR")
        pred = _term(op or None, value, moment)
        preds.append(_negated(pred) if negate else pred)
    return lambda m: all(p(m) for p in preds)
