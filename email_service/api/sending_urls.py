"""Routes n8n calls with the integration API key, included under /api/ (CONTRACT.md)."""

from django.urls import URLPattern, URLResolver, path

from email_service.api.sending import EmailStatusView, SendEmailBatchView, SendEmailView

urlpatterns: list[URLPattern | URLResolver] = [
    path("email/send", SendEmailView.as_view(), name="email-send"),
    path("email/send/batch", SendEmailBatchView.as_view(), name="email-send-batch"),
    path("email/status/<uuid:lead_id>", EmailStatusView.as_view(), name="email-status"),
]
