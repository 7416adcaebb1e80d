"""The OreeStats data model: tenants, their mailboxes, the send queue, tracking and rollups.

Row rules live here as model methods; anything that spans models or calls Google lives in
`email_service.services`.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from django.contrib.auth.hashers import check_password, make_password
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

ALL_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _all_weekdays() -> list[str]:
    return list(ALL_WEEKDAYS)


def new_token() -> str:
    """An opaque, random, URL-safe token (128 bits) for pixels, links and unsubscribe pages."""
    return secrets.token_urlsafe(16)


class Client(models.Model):
    """A client company (tenant): its login, time zone, sending window and tracking switches."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    email = models.EmailField(max_length=254, unique=True, help_text="Dashboard login, stored lower-case.")
    password = models.CharField(max_length=128, help_text="Django PBKDF2-SHA256 hash.")
    is_active = models.BooleanField(default=True)
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone, e.g. Europe/Paris.")
    sending_days = models.JSONField(default=_all_weekdays, help_text='Weekdays the window opens: ["mon", …].')
    # Minutes after local midnight; 1440 means the window runs to the end of the day ("24:00").
    window_start_minute = models.PositiveSmallIntegerField(default=0)
    window_end_minute = models.PositiveSmallIntegerField(default=1440)
    min_gap_seconds = models.PositiveIntegerField(default=0)
    max_gap_seconds = models.PositiveIntegerField(default=0)
    mailbox_daily_limit = models.PositiveIntegerField(default=2000)
    open_tracking = models.BooleanField(default=True)
    click_tracking = models.BooleanField(default=True)
    pause_on_auto_reply = models.BooleanField(default=False)
    # Tokens issued before this instant are refused (a password change moves it).
    tokens_valid_after = models.DateTimeField(null=True, blank=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(window_start_minute__lt=F("window_end_minute")) & Q(window_end_minute__lte=1440),
                name="client_window_not_inverted",
            ),
            models.CheckConstraint(condition=Q(min_gap_seconds__lte=F("max_gap_seconds")), name="client_gap_ordered"),
            models.CheckConstraint(
                condition=Q(mailbox_daily_limit__gte=1) & Q(mailbox_daily_limit__lte=2000),
                name="client_daily_limit_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    def set_password(self, raw_password: str) -> None:
        self.password = make_password(raw_password)

    def check_password(self, raw_password: str) -> bool:
        return check_password(raw_password, self.password)


class Campaign(models.Model):
    """A client's campaign; each client has one default campaign for sends that name none."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    is_default = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client"], condition=Q(is_default=True), name="campaign_one_default_per_client"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Lead(models.Model):
    """A recipient, keyed by the id n8n sends; belongs to exactly one client."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        REPLIED = "replied"
        BOUNCED = "bounced"
        UNSUBSCRIBED = "unsubscribed"

    id = models.UUIDField(primary_key=True, help_text="The lead_id n8n sends.")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="leads")
    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    company = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["client", "email"], name="lead_client_email")]

    def __str__(self) -> str:
        return self.email


class Mailbox(models.Model):
    """A connected Gmail mailbox (the original spec's `GmailToken`): encrypted tokens, pace and cap state."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused", "paused by an operator"
        LIMITED = "limited", "daily sending limit reached"
        DISCONNECTED = "disconnected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="mailboxes")
    email = models.EmailField(max_length=254, unique=True, help_text="One Gmail address serves one client.")
    display_name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=255, blank=True)
    # Fernet ciphertexts (MultiFernet with TOKEN_ENCRYPTION_KEY); never plaintext.
    access_token_encrypted = models.TextField(blank=True)
    refresh_token_encrypted = models.TextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.TextField(blank=True, help_text="Granted OAuth scopes, space-separated.")
    # Pace and cap, changed only by one atomic conditional UPDATE (services.sending).
    daily_limit = models.PositiveIntegerField(default=2000)
    max_sends_per_second = models.FloatField(default=2.5)
    sent_today = models.PositiveIntegerField(default=0)
    sent_today_date = models.DateField(null=True, blank=True, help_text="The client-local day sent_today counts.")
    next_send_at = models.DateTimeField(null=True, blank=True, help_text="Earliest moment the next send may start.")
    cooldown_until = models.DateTimeField(null=True, blank=True, help_text="Gmail asked us to back off until then.")
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Gmail history cursor for reply and bounce detection.
    history_id = models.CharField(max_length=32, blank=True)
    history_synced_at = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Gmail mailbox"
        verbose_name_plural = "Gmail mailboxes"
        ordering = ["email"]
        indexes = [models.Index(fields=["client", "status"], name="mailbox_client_status")]
        constraints = [
            models.CheckConstraint(condition=Q(daily_limit__gte=1), name="mailbox_daily_limit_positive"),
            models.CheckConstraint(condition=Q(max_sends_per_second__gt=0), name="mailbox_rate_positive"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def domain(self) -> str:
        return self.email.rsplit("@", 1)[-1]


class LeadMailboxAssignment(models.Model):
    """The sticky mailbox of a lead: one row per lead, updated in place when it moves."""

    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, primary_key=True, related_name="assignment")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="assignments")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="assignments")
    assigned_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["mailbox"], name="assignment_mailbox")]

    def __str__(self) -> str:
        return f"{self.lead_id} → {self.mailbox_id}"


class EmailSendQueue(models.Model):
    """One email to send: a row of the sending state machine (DESIGN.md decision 2)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"
        PAUSED = "paused", "paused (campaign paused)"
        HELD = "held", "held (no usable mailbox)"

    UNSENT_STATUSES = (Status.QUEUED, Status.PAUSED, Status.HELD)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="emails")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="emails")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="emails")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.SET_NULL, null=True, blank=True, related_name="emails")
    sequence_number = models.PositiveIntegerField()
    recipient_email = models.EmailField(max_length=254)
    subject = models.CharField(max_length=998, blank=True)
    body_html = models.TextField()
    personalization = models.JSONField(default=dict, blank=True, help_text="lead_first_name and friends.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    status_reason = models.CharField(max_length=64, blank=True, help_text="Machine-readable why of the status.")
    send_at = models.DateTimeField(null=True, blank=True, help_text="Not before this (the request's send_at).")
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="When the dispatcher may claim it.")
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True)
    # Set before the request leaves: an unknown outcome is resolved by looking these up.
    message_id = models.CharField(max_length=255, blank=True, help_text="The Message-ID we set.")
    send_started_at = models.DateTimeField(null=True, blank=True)
    # Read back from Gmail after the send.
    gmail_message_id = models.CharField(max_length=64, blank=True)
    gmail_thread_id = models.CharField(max_length=64, blank=True)
    rfc_message_id = models.CharField(max_length=255, blank=True, help_text="The Message-ID Gmail stored.")
    in_reply_to = models.CharField(max_length=255, blank=True)
    references = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    unsubscribe_token = models.CharField(max_length=32, unique=True, default=new_token)
    # Denormalised per-message tracking facts, written by atomic conditional updates.
    first_opened_at = models.DateTimeField(null=True, blank=True)
    first_clicked_at = models.DateTimeField(null=True, blank=True)
    machine_opened_at = models.DateTimeField(null=True, blank=True)
    machine_clicked_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    auto_replied_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    open_count = models.PositiveIntegerField(default=0)
    click_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "queued email"
        constraints = [
            models.UniqueConstraint(
                fields=["client", "lead", "campaign", "sequence_number"], name="queue_one_row_per_step"
            ),
            models.CheckConstraint(condition=Q(sequence_number__gte=1), name="queue_sequence_positive"),
        ]
        indexes = [
            # The dispatcher's "due queued rows per mailbox".
            models.Index(
                fields=["mailbox", "next_attempt_at"], condition=Q(status="queued"), name="queue_due_per_mailbox"
            ),
            # The sweep for expired leases.
            models.Index(fields=["lease_expires_at"], condition=Q(status="sending"), name="queue_sending_lease"),
            models.Index(fields=["lead", "sequence_number"], name="queue_lead_step"),
            models.Index(fields=["client", "status"], name="queue_client_status"),
            models.Index(fields=["gmail_thread_id"], name="queue_gmail_thread"),
            models.Index(fields=["rfc_message_id"], name="queue_rfc_message_id"),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_email} step {self.sequence_number} ({self.status})"


class EmailTrackingPixel(models.Model):
    """The open-tracking pixel of one message; its token never expires."""

    token = models.CharField(max_length=32, primary_key=True, default=new_token)
    message = models.OneToOneField(EmailSendQueue, on_delete=models.CASCADE, related_name="pixel")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.token


class EmailClickTracking(models.Model):
    """One tracked link of one message: the opaque token and the byte-exact original destination."""

    token = models.CharField(max_length=32, primary_key=True, default=new_token)
    message = models.ForeignKey(EmailSendQueue, on_delete=models.CASCADE, related_name="links")
    url = models.TextField()
    position = models.PositiveIntegerField(default=0, help_text="Order of the link in the body.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "tracked link"
        indexes = [models.Index(fields=["message", "position"], name="click_message_position")]

    def __str__(self) -> str:
        return self.url


class EmailEvent(models.Model):
    """Append-only: one thing that happened to one message, labelled human or machine."""

    class Type(models.TextChoices):
        QUEUED = "queued"
        SENT = "sent"
        FAILED = "failed"
        OPEN = "open"
        CLICK = "click"
        REPLY = "reply"
        AUTO_REPLY = "auto_reply"
        BOUNCE = "bounce"
        UNSUBSCRIBE = "unsubscribe"

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="events")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    message = models.ForeignKey(EmailSendQueue, on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    campaign = models.ForeignKey(Campaign, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    sequence_number = models.PositiveIntegerField(null=True, blank=True)
    link = models.ForeignKey(
        EmailClickTracking, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    event_type = models.CharField(max_length=16, choices=Type.choices)
    occurred_at = models.DateTimeField(default=timezone.now)
    is_machine = models.BooleanField(default=False)
    machine_reason = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    # Inbound Gmail message behind a reply/auto_reply/bounce event.
    gmail_message_id = models.CharField(max_length=64, blank=True)
    # Makes recording idempotent: the same fact recorded twice is refused by the database.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["client", "occurred_at"], name="event_client_time"),
            models.Index(fields=["client", "event_type", "occurred_at"], name="event_client_type_time"),
            models.Index(fields=["message", "event_type"], name="event_message_type"),
            # The dashboard's replies feed: a client's inbound events, newest first, one page at a time.
            models.Index(
                fields=["client", "-occurred_at", "-id"],
                condition=Q(event_type__in=["reply", "auto_reply", "bounce"], is_machine=False),
                name="event_client_inbound_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class Suppression(models.Model):
    """An address a client must never email again (unsubscribed, bounced, replied or added by hand)."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed"
        BOUNCED = "bounced"
        REPLIED = "replied"
        MANUAL = "manual"

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="suppressions")
    email = models.EmailField(max_length=254, help_text="Stored lower-case.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    source_message = models.ForeignKey(EmailSendQueue, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "email"], name="suppression_one_per_address")]

    def __str__(self) -> str:
        return f"{self.email} ({self.reason})"


class StepDailyStats(models.Model):
    """Per client, campaign, step and client-local *send* day: how many sent, and how many of those did what.

    Counting follows each message back to the day it was sent, so a period's rates divide
    by the same messages they count and never exceed 100%.
    """

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="step_stats")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="step_stats")
    sequence_number = models.PositiveIntegerField()
    date = models.DateField()
    sent = models.PositiveIntegerField(default=0, db_default=0)
    failed = models.PositiveIntegerField(default=0, db_default=0)
    opened = models.PositiveIntegerField(default=0, db_default=0)
    clicked = models.PositiveIntegerField(default=0, db_default=0)
    replied = models.PositiveIntegerField(default=0, db_default=0)
    auto_replied = models.PositiveIntegerField(default=0, db_default=0)
    bounced = models.PositiveIntegerField(default=0, db_default=0)
    unsubscribed = models.PositiveIntegerField(default=0, db_default=0)
    machine_opened = models.PositiveIntegerField(default=0, db_default=0)
    machine_clicked = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "step daily stats"
        constraints = [
            models.UniqueConstraint(
                fields=["client", "campaign", "sequence_number", "date"], name="step_stats_one_row_per_day"
            )
        ]
        indexes = [models.Index(fields=["client", "date"], name="step_stats_client_date")]

    def __str__(self) -> str:
        return f"{self.date} step {self.sequence_number}"


class ClientDailyActivity(models.Model):
    """Per client and client-local day: what happened that day (the timeline)."""

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="daily_activity")
    date = models.DateField()
    sent = models.PositiveIntegerField(default=0, db_default=0)
    opens = models.PositiveIntegerField(default=0, db_default=0)
    clicks = models.PositiveIntegerField(default=0, db_default=0)
    replies = models.PositiveIntegerField(default=0, db_default=0)
    bounces = models.PositiveIntegerField(default=0, db_default=0)
    unsubscribes = models.PositiveIntegerField(default=0, db_default=0)
    machine_opens = models.PositiveIntegerField(default=0, db_default=0)
    machine_clicks = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "client daily activity"
        constraints = [models.UniqueConstraint(fields=["client", "date"], name="activity_one_row_per_day")]

    def __str__(self) -> str:
        return str(self.date)


class ClientSession(models.Model):
    """A dashboard JWT, by its `jti`: revoking the row revokes the token."""

    jti = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="sessions")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)

    class Meta:
        indexes = [models.Index(fields=["client", "revoked_at"], name="session_client_revoked")]

    def __str__(self) -> str:
        return str(self.jti)

    def is_live(self, now: datetime | None = None) -> bool:
        return self.revoked_at is None and self.expires_at > (now or timezone.now())


class OAuthState(models.Model):
    """Server-side half of one OAuth connection attempt: single use, short-lived, bound to a client."""

    nonce = models.CharField(max_length=64, primary_key=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="oauth_states")
    code_verifier_encrypted = models.TextField()
    initiated_by = models.CharField(max_length=16, help_text="api_key or client")
    return_to = models.CharField(max_length=200, blank=True, help_text="A local dashboard path only.")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"OAuth state for {self.client_id}"


class ServiceHeartbeat(models.Model):
    """The last sign of life of a worker or beat process, read by /api/health."""

    name = models.CharField(max_length=128, primary_key=True, help_text="worker@host:pid or beat@host:pid")
    kind = models.CharField(max_length=16)
    last_seen = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "last_seen"], name="heartbeat_kind_seen")]

    def __str__(self) -> str:
        return self.name


def event_fields_from_message(message: EmailSendQueue) -> dict[str, Any]:
    """The denormalised columns an event copies from its message (never from request input)."""
    return {
        "client_id": message.client_id,
        "lead_id": message.lead_id,
        "message_id": message.pk,
        "mailbox_id": message.mailbox_id,
        "campaign_id": message.campaign_id,
        "sequence_number": message.sequence_number,
    }
