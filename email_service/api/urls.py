"""Routes under /api/ (CONTRACT.md)."""

from django.urls import path

from email_service.api.operations import HealthView
from email_service.api.sending import EmailStatusView

urlpatterns = [
    path("health", HealthView.as_view(), name="health"),
    path("email/status/<uuid:lead_id>", EmailStatusView.as_view(), name="email-status"),
]
