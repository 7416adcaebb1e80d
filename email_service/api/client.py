"""The client dashboard API (`/api/client/*`): thin adapters over the dashboard room (sessions, stats, settings).

No route takes a client id: every read and write is scoped to `request.user.client`, the client
of the verified token, and another client's object id answers 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, cast

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from email_service.api.adapters import json_object, parse_body, parse_query, respond
from email_service.api.auth import BearerAuthentication, ClientPrincipal, IsClient
from email_service.dashboard import sessions as auth_service
from email_service.dashboard import stats
from email_service.dashboard.client_settings import client_settings, update_client_settings
from email_service.mailboxes.lifecycle import disconnect_mailbox_by_request
from email_service.models import Campaign, Client, Mailbox
from email_service.sending.campaigns import pause_campaign, resume_campaign
from email_service.tracking.hits import client_ip

# --- Shapes --------------------------------------------------------------------------------------


class ClientErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """The project's error shape, as the dashboard routes answer it (`field` names the bad input)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    field = serializers.CharField(required=False)


class LoginRequestSerializer(serializers.Serializer[dict[str, Any]]):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class ClientSummarySerializer(serializers.Serializer[Client]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    email = serializers.EmailField()
    timezone = serializers.CharField()


class LoginResponseSerializer(serializers.Serializer[dict[str, Any]]):
    access_token = serializers.CharField()
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_at = serializers.DateTimeField()
    client = ClientSummarySerializer()


class MetricsSerializer(serializers.Serializer[dict[str, Any]]):
    emails_sent = serializers.IntegerField()
    opens = serializers.IntegerField(help_text="Messages opened by a person (unique, machine opens excluded).")
    clicks = serializers.IntegerField(help_text="Messages clicked by a person (unique).")
    replies = serializers.IntegerField(help_text="Messages answered by a person (auto-replies excluded).")
    bounces = serializers.IntegerField()
    unsubscribes = serializers.IntegerField()
    open_rate = serializers.FloatField(help_text="Percent of emails_sent, two decimals.")
    click_rate = serializers.FloatField(help_text="Percent of emails_sent, two decimals.")
    reply_rate = serializers.FloatField(help_text="Percent of emails_sent, two decimals.")
    bounce_rate = serializers.FloatField(help_text="Percent of emails_sent, two decimals.")
    machine_opens = serializers.IntegerField(help_text="Messages opened only by a machine (proxy, scanner).")
    machine_clicks = serializers.IntegerField(help_text="Messages clicked by a link scanner.")


class StatsSerializer(serializers.Serializer[dict[str, Any]]):
    all_time = MetricsSerializer()
    last_7_days = MetricsSerializer(help_text="Emails sent in the last 7 client-local days (today included).")
    last_30_days = MetricsSerializer(help_text="Emails sent in the last 30 client-local days (today included).")


class StepMetricsSerializer(MetricsSerializer):
    sequence_number = serializers.IntegerField()


class CampaignSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    is_default = serializers.BooleanField()
    steps = StepMetricsSerializer(many=True)


class CampaignListSerializer(serializers.Serializer[dict[str, Any]]):
    campaigns = CampaignSerializer(many=True)


class CampaignStateSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    emails_affected = serializers.IntegerField(help_text="Unsent emails paused (or resumed) by this call.")


class RepliesQuerySerializer(serializers.Serializer[dict[str, int]]):
    page = serializers.IntegerField(
        required=False,
        default=1,
        min_value=1,
        max_value=stats.MAX_REPLY_OFFSET,
        help_text=f"Page number, for the first {stats.MAX_REPLY_OFFSET} entries; deeper, follow next_cursor.",
    )
    page_size = serializers.IntegerField(
        required=False, default=stats.DEFAULT_PAGE_SIZE, min_value=1, max_value=stats.MAX_PAGE_SIZE
    )
    cursor = serializers.CharField(
        required=False, max_length=200, help_text="The next_cursor of the previous page: the next entries at any depth."
    )


class ReplySerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=[str(kind) for kind in stats.REPLY_KINDS])
    lead_id = serializers.UUIDField(allow_null=True)
    lead_email = serializers.CharField()
    subject = serializers.CharField()
    snippet = serializers.CharField()
    received_at = serializers.DateTimeField()
    sequence_number = serializers.IntegerField(allow_null=True)
    campaign_id = serializers.UUIDField(allow_null=True)


class ReplyPageSerializer(serializers.Serializer[dict[str, Any]]):
    results = ReplySerializer(many=True)
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    has_next = serializers.BooleanField()
    next_cursor = serializers.CharField(allow_null=True, help_text="Pass as cursor for the next page.")


class TimelineQuerySerializer(serializers.Serializer[dict[str, int]]):
    days = serializers.IntegerField(
        required=False, default=stats.DEFAULT_TIMELINE_DAYS, min_value=1, max_value=stats.MAX_TIMELINE_DAYS
    )


class TimelineDaySerializer(serializers.Serializer[dict[str, Any]]):
    date = serializers.DateField()
    sent = serializers.IntegerField()
    opens = serializers.IntegerField()
    clicks = serializers.IntegerField()
    replies = serializers.IntegerField()
    bounces = serializers.IntegerField()
    unsubscribes = serializers.IntegerField()


class TimelineSerializer(serializers.Serializer[dict[str, Any]]):
    days = TimelineDaySerializer(many=True)


class MailboxStatusSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    status = serializers.ChoiceField(choices=Mailbox.Status.choices)
    status_reason = serializers.CharField()
    sent_today = serializers.IntegerField()
    daily_limit = serializers.IntegerField(help_text="The lower of the mailbox's limit and the client's setting.")
    remaining_today = serializers.IntegerField(help_text="0 unless the mailbox is active (or limited).")
    last_sent_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    connected_at = serializers.DateTimeField(allow_null=True)


class MailboxListSerializer(serializers.Serializer[dict[str, Any]]):
    mailboxes = MailboxStatusSerializer(many=True)


class MailboxDisconnectedSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Mailbox.Status.choices)
    emails_held = serializers.IntegerField()
    revoked_at_google = serializers.BooleanField(
        allow_null=True,
        help_text="true: Google revoked the grant; false: Google could not be reached (disconnect again to "
        "retry); null: there was no token to revoke.",
    )


class ChangePasswordSerializer(serializers.Serializer[dict[str, str]]):
    current_password = serializers.CharField(max_length=1024, trim_whitespace=False)
    new_password = serializers.CharField(max_length=1024, trim_whitespace=False)


class ChangePasswordResponseSerializer(serializers.Serializer[dict[str, int]]):
    sessions_revoked = serializers.IntegerField()


class SendingWindowSerializer(serializers.Serializer[dict[str, Any]]):
    days = serializers.ListField(
        child=serializers.ChoiceField(choices=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    )
    start = serializers.CharField(help_text="HH:MM, client-local.")
    end = serializers.CharField(help_text="HH:MM, client-local; 24:00 is the end of the day.")


class SettingsSerializer(serializers.Serializer[dict[str, Any]]):
    timezone = serializers.CharField(help_text="IANA time zone.")
    sending_window = SendingWindowSerializer()
    min_gap_seconds = serializers.IntegerField(min_value=0, max_value=86_400)
    max_gap_seconds = serializers.IntegerField(min_value=0, max_value=86_400)
    mailbox_daily_limit = serializers.IntegerField(min_value=1, max_value=2000)
    open_tracking = serializers.BooleanField()
    click_tracking = serializers.BooleanField()
    pause_on_auto_reply = serializers.BooleanField()


class SettingsUpdateSerializer(SettingsSerializer):
    """Any subset of the settings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


# --- Views ---------------------------------------------------------------------------------------


class ClientAPIView(APIView):
    """A dashboard route: a client's token only."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [IsClient]

    def principal(self, request: Request) -> ClientPrincipal:
        # IsClient has admitted only a ClientPrincipal; the stubs type request.user as a Django user.
        return cast(ClientPrincipal, request.user)


class LoginView(APIView):
    """Exchange a client's email and password for a dashboard token."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="client_login",
        request=LoginRequestSerializer,
        responses={
            200: LoginResponseSerializer,
            400: ClientErrorSerializer,
            401: ClientErrorSerializer,
            429: ClientErrorSerializer,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        body = parse_body(request, LoginRequestSerializer)
        result = auth_service.login(
            email=body["email"],
            password=body["password"],
            ip=client_ip(request.META),
            user_agent=str(request.META.get("HTTP_USER_AGENT", "")),
        )
        payload = {
            "access_token": result.issued.token,
            "token_type": "Bearer",
            "expires_at": result.issued.expires_at,
            "client": result.client,
        }
        response = respond(LoginResponseSerializer, payload)
        response["Cache-Control"] = "no-store"
        return response


class LogoutView(ClientAPIView):
    """Revoke the token this request carries."""

    @extend_schema(operation_id="client_logout", request=None, responses={204: None, 401: ClientErrorSerializer})
    def post(self, request: Request) -> Response:
        auth_service.logout(session=self.principal(request).session)
        return Response(status=204)


class StatsView(ClientAPIView):
    """All-time, 7-day and 30-day counts and rates."""

    @extend_schema(operation_id="client_stats", responses={200: StatsSerializer, 401: ClientErrorSerializer})
    def get(self, request: Request) -> Response:
        return respond(StatsSerializer, stats.client_stats(client=self.principal(request).client))


class CampaignsView(ClientAPIView):
    """Campaigns with all-time counts and rates per sequence step."""

    @extend_schema(operation_id="client_campaigns", responses={200: CampaignListSerializer, 401: ClientErrorSerializer})
    def get(self, request: Request) -> Response:
        campaigns = stats.campaign_performance(client=self.principal(request).client)
        return respond(CampaignListSerializer, {"campaigns": campaigns})


class _CampaignActionView(ClientAPIView):
    """One of the client's campaigns, changed by `change`; answers its state and the emails it moved."""

    change: Callable[..., int]

    def post(self, request: Request, campaign_id: uuid.UUID) -> Response:
        campaign = stats.get_client_campaign(client=self.principal(request).client, campaign_id=campaign_id)
        affected = type(self).change(campaign=campaign)
        return respond(
            CampaignStateSerializer,
            {"id": campaign.pk, "name": campaign.name, "status": campaign.status, "emails_affected": affected},
        )


def _campaign_action_schema(operation_id: str) -> Callable[[type[_CampaignActionView]], type[_CampaignActionView]]:
    return extend_schema_view(
        post=extend_schema(
            operation_id=operation_id,
            request=None,
            responses={200: CampaignStateSerializer, 401: ClientErrorSerializer, 404: ClientErrorSerializer},
        )
    )


@_campaign_action_schema("client_campaign_pause")
class CampaignPauseView(_CampaignActionView):
    """Pause a campaign: its unsent emails wait until it resumes."""

    change = staticmethod(pause_campaign)


@_campaign_action_schema("client_campaign_resume")
class CampaignResumeView(_CampaignActionView):
    """Resume a paused campaign: its paused emails become due again."""

    change = staticmethod(resume_campaign)


class RepliesView(ClientAPIView):
    """Replies, auto-replies and bounces, newest first, a page at a time."""

    @extend_schema(
        operation_id="client_replies",
        parameters=[RepliesQuerySerializer],
        responses={200: ReplyPageSerializer, 400: ClientErrorSerializer, 401: ClientErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        page = stats.replies_feed(client=self.principal(request).client, **parse_query(request, RepliesQuerySerializer))
        return respond(ReplyPageSerializer, vars(page))


class TimelineView(ClientAPIView):
    """One entry per client-local day, zero days included, oldest first."""

    @extend_schema(
        operation_id="client_timeline",
        parameters=[TimelineQuerySerializer],
        responses={200: TimelineSerializer, 400: ClientErrorSerializer, 401: ClientErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        query = parse_query(request, TimelineQuerySerializer)
        days = stats.client_timeline(client=self.principal(request).client, days=query["days"])
        return respond(TimelineSerializer, {"days": days})


class MailboxesView(ClientAPIView):
    """The client's mailboxes and today's sending against their limits."""

    @extend_schema(operation_id="client_mailboxes", responses={200: MailboxListSerializer, 401: ClientErrorSerializer})
    def get(self, request: Request) -> Response:
        mailboxes = stats.client_mailboxes(client=self.principal(request).client)
        return respond(MailboxListSerializer, {"mailboxes": mailboxes})


class MailboxDetailView(ClientAPIView):
    """Disconnect one of the client's mailboxes: revoke its grant at Google; its unsent emails are held, not lost."""

    @extend_schema(
        operation_id="client_mailbox_disconnect",
        responses={200: MailboxDisconnectedSerializer, 401: ClientErrorSerializer, 404: ClientErrorSerializer},
    )
    def delete(self, request: Request, mailbox_id: uuid.UUID) -> Response:
        mailbox = stats.get_client_mailbox(client=self.principal(request).client, mailbox_id=mailbox_id)
        result = disconnect_mailbox_by_request(mailbox=mailbox, reason="disconnected by the client")
        return respond(
            MailboxDisconnectedSerializer,
            {
                "id": mailbox.pk,
                "status": mailbox.status,
                "emails_held": result.held_emails,
                "revoked_at_google": result.revoked,
            },
        )


class ChangePasswordView(ClientAPIView):
    """Change the password; every other token of the client stops working."""

    @extend_schema(
        operation_id="client_change_password",
        request=ChangePasswordSerializer,
        responses={200: ChangePasswordResponseSerializer, 400: ClientErrorSerializer, 401: ClientErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        principal = self.principal(request)
        revoked = auth_service.change_password(
            client=principal.client, session=principal.session, **parse_body(request, ChangePasswordSerializer)
        )
        return respond(ChangePasswordResponseSerializer, {"sessions_revoked": revoked})


class SettingsView(ClientAPIView):
    """The client's time zone, sending window, pacing, daily limit and tracking switches."""

    @extend_schema(operation_id="client_settings", responses={200: SettingsSerializer, 401: ClientErrorSerializer})
    def get(self, request: Request) -> Response:
        return respond(SettingsSerializer, client_settings(client=self.principal(request).client))

    @extend_schema(
        operation_id="client_settings_update",
        request=SettingsUpdateSerializer,
        responses={200: SettingsSerializer, 400: ClientErrorSerializer, 401: ClientErrorSerializer},
    )
    def put(self, request: Request) -> Response:
        changes = json_object(request, what="settings")
        return respond(
            SettingsSerializer, update_client_settings(client=self.principal(request).client, changes=changes)
        )
