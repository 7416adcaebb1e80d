"""Operators: every admin page loads for staff and refuses everyone else; actions call services."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from email_service.models import (
    Campaign,
    ClientDailyActivity,
    ClientSession,
    EmailClickTracking,
    EmailEvent,
    EmailSendQueue,
    EmailTrackingPixel,
    Mailbox,
    OAuthState,
    ServiceHeartbeat,
    StepDailyStats,
    Suppression,
)
from tests.factories import EmailEventFactory, EmailSendQueueFactory, LeadMailboxAssignmentFactory

pytestmark = pytest.mark.django_db

MODELS = [model for model in admin.site._registry if model._meta.app_label == "email_service"]


@pytest.fixture
def one_of_everything():
    email = EmailSendQueueFactory()
    LeadMailboxAssignmentFactory(lead=email.lead, client=email.client, mailbox=email.mailbox)
    EmailEventFactory(message=email)
    EmailTrackingPixel.objects.create(message=email)
    EmailClickTracking.objects.create(message=email, url="https://example.com/")
    Suppression.objects.create(client=email.client, email="gone@x.test", reason="bounced")
    StepDailyStats.objects.create(
        client=email.client, campaign=email.campaign, sequence_number=1, date=timezone.localdate(), sent=1
    )
    ClientDailyActivity.objects.create(client=email.client, date=timezone.localdate(), sent=1)
    ClientSession.objects.create(client=email.client, expires_at=timezone.now())
    OAuthState.objects.create(
        nonce="n" * 20, client=email.client, code_verifier_encrypted="x", initiated_by="client",
        expires_at=timezone.now(),
    )  # fmt: skip
    ServiceHeartbeat.objects.create(name="worker@h:1", kind="worker", last_seen=timezone.now())
    return email


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("operator", "op@oreestats.test", "Operator-Pass-991")
    client.force_login(user)
    return client


def test_every_model_is_registered():
    from django.apps import apps

    registered = set(MODELS)
    assert registered == set(apps.get_app_config("email_service").get_models())


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_page_load_for_staff(model, operator, one_of_everything):
    opts = model._meta
    changelist = operator.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    searched = operator.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), {"q": "x@y"})
    assert searched.status_code == 200
    obj = model.objects.first()
    assert obj is not None
    change = operator.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
    assert change.status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_admin_refuses_a_non_staff_user(model, client, one_of_everything):
    user = User.objects.create_user("someone", "s@x.test", "Someone-Pass-991")
    client.force_login(user)
    opts = model._meta
    response = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_events_are_read_only_in_the_admin(operator, one_of_everything):
    event = EmailEvent.objects.get()
    response = operator.post(reverse("admin:email_service_emailevent_change", args=[event.pk]), {"event_type": "click"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.event_type == "sent"


def test_mailbox_tokens_never_appear_on_the_change_page(operator, one_of_everything):
    mailbox = Mailbox.objects.get()
    mailbox.refresh_token_encrypted = "gAAAA-cipher-text-marker"
    mailbox.save(update_fields=["refresh_token_encrypted"])
    page = operator.get(reverse("admin:email_service_mailbox_change", args=[mailbox.pk]))
    assert b"cipher-text-marker" not in page.content


def test_pause_and_resume_campaign_actions_move_unsent_emails(operator, one_of_everything):
    email = one_of_everything
    url = reverse("admin:email_service_campaign_changelist")
    operator.post(url, {"action": "pause_selected", "_selected_action": [email.campaign_id]})
    email.refresh_from_db()
    assert (email.campaign.status, email.status) == (Campaign.Status.PAUSED, EmailSendQueue.Status.PAUSED)
    operator.post(url, {"action": "resume_selected", "_selected_action": [email.campaign_id]})
    email.refresh_from_db()
    email.campaign.refresh_from_db()
    assert (email.campaign.status, email.status) == (Campaign.Status.ACTIVE, EmailSendQueue.Status.QUEUED)


def test_pause_and_resume_mailbox_actions(operator, one_of_everything):
    mailbox = one_of_everything.mailbox
    url = reverse("admin:email_service_mailbox_changelist")
    operator.post(url, {"action": "pause_selected", "_selected_action": [mailbox.pk]})
    mailbox.refresh_from_db()
    assert mailbox.status == Mailbox.Status.PAUSED
    operator.post(url, {"action": "resume_selected", "_selected_action": [mailbox.pk]})
    mailbox.refresh_from_db()
    assert mailbox.status == Mailbox.Status.ACTIVE


def test_cancel_and_retry_email_actions(operator, one_of_everything):
    email = one_of_everything
    url = reverse("admin:email_service_emailsendqueue_changelist")
    operator.post(url, {"action": "retry_selected", "_selected_action": [email.pk]})
    email.refresh_from_db()
    assert email.status == EmailSendQueue.Status.QUEUED  # only a failed email is retried
    operator.post(url, {"action": "cancel_selected", "_selected_action": [email.pk]})
    email.refresh_from_db()
    assert (email.status, email.status_reason) == (EmailSendQueue.Status.CANCELLED, "cancelled_by_operator")

    EmailSendQueue.objects.filter(pk=email.pk).update(status=EmailSendQueue.Status.FAILED, attempts=5)
    operator.post(url, {"action": "retry_selected", "_selected_action": [email.pk]})
    email.refresh_from_db()
    assert (email.status, email.attempts) == (EmailSendQueue.Status.QUEUED, 0)
