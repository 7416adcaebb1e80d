"""factory_boy factories for the data model; personas are built from these in conftest."""

from __future__ import annotations

import uuid

import factory
from django.utils import timezone

from email_service.models import (
    Campaign,
    Client,
    EmailEvent,
    EmailSendQueue,
    Lead,
    LeadMailboxAssignment,
    Mailbox,
)

DEFAULT_PASSWORD = "Sturdy-Password-2048"


class ClientFactory(factory.django.DjangoModelFactory[Client]):
    class Meta:
        model = Client
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Company {n}")
    email = factory.Sequence(lambda n: f"owner{n}@company{n}.test")

    @factory.post_generation
    def password(obj, create, extracted, **kwargs):
        obj.set_password(extracted or DEFAULT_PASSWORD)
        if create:
            obj.save(update_fields=["password"])

    @factory.post_generation
    def default_campaign(obj, create, extracted, **kwargs):
        if create:
            Campaign.objects.create(client=obj, name="Default campaign", is_default=True)


class CampaignFactory(factory.django.DjangoModelFactory[Campaign]):
    class Meta:
        model = Campaign

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Campaign {n}")


class LeadFactory(factory.django.DjangoModelFactory[Lead]):
    class Meta:
        model = Lead

    id = factory.LazyFunction(uuid.uuid4)
    client = factory.SubFactory(ClientFactory)
    email = factory.Sequence(lambda n: f"lead{n}@prospect.test")
    first_name = "Pat"


class MailboxFactory(factory.django.DjangoModelFactory[Mailbox]):
    class Meta:
        model = Mailbox

    client = factory.SubFactory(ClientFactory)
    email = factory.Sequence(lambda n: f"sender{n}@company.test")
    display_name = "Sam Sender"
    connected_at = factory.LazyFunction(timezone.now)


class LeadMailboxAssignmentFactory(factory.django.DjangoModelFactory[LeadMailboxAssignment]):
    class Meta:
        model = LeadMailboxAssignment

    lead = factory.SubFactory(LeadFactory)
    client = factory.SelfAttribute("lead.client")
    mailbox = factory.SubFactory(MailboxFactory, client=factory.SelfAttribute("..client"))


class EmailSendQueueFactory(factory.django.DjangoModelFactory[EmailSendQueue]):
    class Meta:
        model = EmailSendQueue

    client = factory.SubFactory(ClientFactory)
    campaign = factory.LazyAttribute(lambda o: o.client.campaigns.get(is_default=True))
    lead = factory.SubFactory(LeadFactory, client=factory.SelfAttribute("..client"))
    mailbox = factory.SubFactory(MailboxFactory, client=factory.SelfAttribute("..client"))
    sequence_number = 1
    recipient_email = factory.SelfAttribute("lead.email")
    subject = "Quick question"
    body_html = "<p>Hello</p>"


class EmailEventFactory(factory.django.DjangoModelFactory[EmailEvent]):
    class Meta:
        model = EmailEvent

    message = factory.SubFactory(EmailSendQueueFactory)
    client = factory.SelfAttribute("message.client")
    lead = factory.SelfAttribute("message.lead")
    campaign = factory.SelfAttribute("message.campaign")
    mailbox = factory.SelfAttribute("message.mailbox")
    sequence_number = factory.SelfAttribute("message.sequence_number")
    event_type = EmailEvent.Type.SENT
