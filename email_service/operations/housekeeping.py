"""Removal of rows that have outlived their use: expired dashboard sessions and OAuth states."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from email_service.models import ClientSession, OAuthState, ServiceHeartbeat

KEEP_EXPIRED_FOR = timedelta(days=1)
KEEP_HEARTBEATS_FOR = timedelta(days=7)


def purge_expired(*, now: datetime | None = None) -> dict[str, int]:
    """Delete sessions and OAuth states expired more than a day ago, and long-dead heartbeats."""
    now = now or timezone.now()
    sessions, _ = ClientSession.objects.filter(expires_at__lt=now - KEEP_EXPIRED_FOR).delete()
    states, _ = OAuthState.objects.filter(expires_at__lt=now - KEEP_EXPIRED_FOR).delete()
    heartbeats, _ = ServiceHeartbeat.objects.filter(last_seen__lt=now - KEEP_HEARTBEATS_FOR).delete()
    return {"sessions": sessions, "oauth_states": states, "heartbeats": heartbeats}
