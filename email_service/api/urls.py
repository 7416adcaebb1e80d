"""Routes under /api/ (CONTRACT.md): one module per audience, so each grows on its own."""

from django.urls import include, path

from email_service.api.operations import HealthView, WebHealthView

urlpatterns = [
    path("health", HealthView.as_view(), name="health"),
    path("health/web", WebHealthView.as_view(), name="health-web"),
    path("", include("email_service.api.sending_urls")),
    path("", include("email_service.api.tracking_urls")),
    path("", include("email_service.api.oauth_urls")),
    path("", include("email_service.api.client_urls")),
]
