"""Operator admin: every model, searchable by email and id; events read-only; actions call services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from email_service.mailboxes.lifecycle import disconnect_mailbox_by_request, pause_mailbox, resume_mailbox
from email_service.models import (
    Campaign,
    Client,
    ClientDailyActivity,
    ClientSession,
    EmailClickTracking,
    EmailEvent,
    EmailSendQueue,
    EmailTrackingPixel,
    Lead,
    LeadMailboxAssignment,
    Mailbox,
    OAuthState,
    ServiceHeartbeat,
    StepDailyStats,
    Suppression,
)
from email_service.sending.campaigns import pause_campaign, resume_campaign
from email_service.sending.queue_admin import cancel_email, retry_email


def _apply(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: Callable[[Any], object],
    verb: str,
) -> None:
    """Run one service per selected row and report how many it changed."""
    changed = 0
    for obj in queryset:
        result = action(obj)
        changed += int(result) if isinstance(result, bool | int) else 1
    modeladmin.message_user(request, f"{verb}: {changed} of {queryset.count()} selected.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """For append-only and machine-maintained tables: operators look, never edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin[Client]):
    list_display = ["name", "email", "is_active", "timezone", "mailbox_daily_limit", "created_at"]
    list_filter = ["is_active", "open_tracking", "click_tracking"]
    search_fields = ["name", "email", "id"]
    readonly_fields = ["id", "password", "last_login_at", "created_at", "updated_at"]
    ordering = ["name"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin[Campaign]):
    list_display = ["name", "client", "status", "is_default", "created_at"]
    list_filter = ["status", "is_default"]
    search_fields = ["name", "id", "client__email", "client__name"]
    list_select_related = ["client"]
    raw_id_fields = ["client"]
    readonly_fields = ["id", "paused_at", "created_at"]
    actions = ["pause_selected", "resume_selected"]

    @admin.action(description="Pause selected campaigns (their unsent emails wait)")
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _apply(self, request, queryset, lambda c: pause_campaign(campaign=c) >= 0, "Paused")

    @admin.action(description="Resume selected campaigns")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _apply(self, request, queryset, lambda c: resume_campaign(campaign=c) >= 0, "Resumed")


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin[Lead]):
    list_display = ["email", "client", "status", "first_name", "last_name", "created_at"]
    list_filter = ["status"]
    search_fields = ["email", "id", "client__email", "client__name"]
    list_select_related = ["client"]
    raw_id_fields = ["client"]
    readonly_fields = ["created_at", "status_changed_at"]


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin[Mailbox]):
    list_display = ["email", "client", "status", "sent_today", "daily_limit", "last_sent_at", "last_error_at"]
    list_filter = ["status"]
    search_fields = ["email", "id", "client__email", "client__name"]
    list_select_related = ["client"]
    raw_id_fields = ["client"]
    # Token ciphertexts are never shown, even encrypted.
    exclude = ["access_token_encrypted", "refresh_token_encrypted"]
    readonly_fields = [
        "id",
        "scopes",
        "token_expires_at",
        "sent_today",
        "sent_today_date",
        "next_send_at",
        "cooldown_until",
        "last_sent_at",
        "last_error",
        "last_error_at",
        "history_id",
        "history_synced_at",
        "connected_at",
        "disconnected_at",
        "created_at",
        "updated_at",
    ]
    actions = ["pause_selected", "resume_selected", "disconnect_selected"]

    @admin.action(description="Pause selected mailboxes")
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        _apply(self, request, queryset, lambda m: pause_mailbox(mailbox=m), "Paused")

    @admin.action(description="Resume selected mailboxes")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        _apply(self, request, queryset, lambda m: resume_mailbox(mailbox=m), "Resumed")

    @admin.action(description="Disconnect (revoke at Google)")
    def disconnect_selected(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        unrevoked = []
        for mailbox in queryset:
            if disconnect_mailbox_by_request(mailbox=mailbox, reason="disconnected by an operator").revoked is False:
                unrevoked.append(mailbox.email)
        self.message_user(request, f"Disconnected: {queryset.count()}; their unsent emails are held.", messages.SUCCESS)
        if unrevoked:
            self.message_user(
                request,
                "Google could not be reached to revoke access for "
                + ", ".join(unrevoked)
                + "; run the action again to retry the revocation.",
                messages.WARNING,
            )


@admin.register(LeadMailboxAssignment)
class LeadMailboxAssignmentAdmin(admin.ModelAdmin[LeadMailboxAssignment]):
    list_display = ["lead", "mailbox", "client", "assigned_at", "updated_at"]
    search_fields = ["lead__email", "lead__id", "mailbox__email", "client__email"]
    list_select_related = ["lead", "mailbox", "client"]
    raw_id_fields = ["lead", "mailbox", "client"]


@admin.register(EmailSendQueue)
class EmailSendQueueAdmin(admin.ModelAdmin[EmailSendQueue]):
    list_display = [
        "id",
        "recipient_email",
        "client",
        "sequence_number",
        "status",
        "status_reason",
        "mailbox",
        "next_attempt_at",
        "sent_at",
        "attempts",
    ]
    list_filter = ["status", "status_reason"]
    search_fields = ["id", "recipient_email", "lead__id", "client__email", "mailbox__email", "gmail_message_id"]
    list_select_related = ["client", "mailbox"]
    raw_id_fields = ["client", "campaign", "lead", "mailbox"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "attempts",
        "lease_expires_at",
        "claimed_by",
        "message_id",
        "send_started_at",
        "gmail_message_id",
        "gmail_thread_id",
        "rfc_message_id",
        "in_reply_to",
        "references",
        "sent_at",
        "unsubscribe_token",
        "first_opened_at",
        "first_clicked_at",
        "replied_at",
        "bounced_at",
        "unsubscribed_at",
        "open_count",
        "click_count",
        "created_at",
        "updated_at",
    ]
    actions = ["cancel_selected", "retry_selected"]

    @admin.action(description="Cancel selected unsent emails")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[EmailSendQueue]) -> None:
        _apply(self, request, queryset, lambda e: cancel_email(email=e), "Cancelled")

    @admin.action(description="Retry selected failed emails")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[EmailSendQueue]) -> None:
        _apply(self, request, queryset, lambda e: retry_email(email=e), "Queued again")


@admin.register(EmailTrackingPixel)
class EmailTrackingPixelAdmin(ReadOnlyAdmin):
    list_display = ["token", "message", "created_at"]
    search_fields = ["token", "message__id", "message__recipient_email"]
    list_select_related = ["message"]


@admin.register(EmailClickTracking)
class EmailClickTrackingAdmin(ReadOnlyAdmin):
    list_display = ["token", "message", "position", "url", "created_at"]
    search_fields = ["token", "message__id", "message__recipient_email", "url"]
    list_select_related = ["message"]


@admin.register(EmailEvent)
class EmailEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "event_type", "is_machine", "machine_reason", "client", "message", "ip"]
    list_filter = ["event_type", "is_machine", "machine_reason"]
    search_fields = ["message__id", "lead__id", "lead__email", "client__email", "gmail_message_id"]
    list_select_related = ["client", "message"]
    date_hierarchy = "occurred_at"
    # A million-row table: never COUNT(*) the whole thing for the paginator.
    show_full_result_count = False


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin[Suppression]):
    list_display = ["email", "client", "reason", "created_at"]
    list_filter = ["reason"]
    search_fields = ["email", "client__email", "client__name"]
    list_select_related = ["client"]
    raw_id_fields = ["client", "source_message"]


@admin.register(StepDailyStats)
class StepDailyStatsAdmin(ReadOnlyAdmin):
    list_display = ["date", "client", "campaign", "sequence_number", "sent", "opened", "clicked", "replied"]
    search_fields = ["client__email", "client__name", "campaign__id"]
    list_select_related = ["client", "campaign"]
    date_hierarchy = "date"


@admin.register(ClientDailyActivity)
class ClientDailyActivityAdmin(ReadOnlyAdmin):
    list_display = ["date", "client", "sent", "opens", "clicks", "replies", "bounces", "unsubscribes"]
    search_fields = ["client__email", "client__name"]
    list_select_related = ["client"]
    date_hierarchy = "date"


@admin.register(ClientSession)
class ClientSessionAdmin(ReadOnlyAdmin):
    list_display = ["jti", "client", "created_at", "expires_at", "revoked_at", "ip"]
    search_fields = ["jti", "client__email"]
    list_select_related = ["client"]


@admin.register(OAuthState)
class OAuthStateAdmin(ReadOnlyAdmin):
    list_display = ["client", "initiated_by", "created_at", "expires_at", "used_at"]
    search_fields = ["client__email", "client__id"]
    exclude = ["code_verifier_encrypted", "nonce"]
    list_select_related = ["client"]


@admin.register(ServiceHeartbeat)
class ServiceHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "last_seen"]
    list_filter = ["kind"]
    search_fields = ["name"]
