"""Routes n8n calls with the integration API key, included under /api/ (CONTRACT.md)."""

from django.urls import URLPattern, URLResolver, path

from email_service.api.sending import EmailStatusView

urlpatterns: list[URLPattern | URLResolver] = [
    path("email/status/<uuid:lead_id>", EmailStatusView.as_view(), name="email-status"),
]
