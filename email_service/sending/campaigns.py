"""Campaign pause and resume: a campaign state the dispatcher honours on its next claim."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from email_service.models import Campaign, EmailSendQueue

Status = EmailSendQueue.Status


@transaction.atomic
def pause_campaign(*, campaign: Campaign) -> int:
    """Pause the campaign and its unsent emails; a send already in flight finishes. Returns rows paused."""
    now = timezone.now()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED, paused_at=now)
    campaign.status, campaign.paused_at = Campaign.Status.PAUSED, now
    return EmailSendQueue.objects.filter(campaign=campaign, status=Status.QUEUED).update(
        status=Status.PAUSED, status_reason="campaign_paused", updated_at=now
    )


@transaction.atomic
def resume_campaign(*, campaign: Campaign) -> int:
    """Resume the campaign; its paused emails become due again. Returns rows resumed."""
    now = timezone.now()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ACTIVE, paused_at=None)
    campaign.status, campaign.paused_at = Campaign.Status.ACTIVE, None
    return EmailSendQueue.objects.filter(
        campaign=campaign, status=Status.PAUSED, status_reason="campaign_paused"
    ).update(status=Status.QUEUED, status_reason="", updated_at=now)
