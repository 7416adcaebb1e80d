"""Root URL configuration."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from email_service.api.tracking import UnsubscribeView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("email_service.api.urls")),
    # The List-Unsubscribe URL: short, at the root, outside the API (CONTRACT.md).
    path("u/<str:token>", UnsubscribeView.as_view(), name="unsubscribe"),
    path("dashboard/", include("email_service.web.urls")),
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
]

handler400 = "email_service.api.errors.json_bad_request"
handler403 = "email_service.api.errors.json_forbidden"
handler404 = "email_service.api.errors.json_not_found"
handler500 = "email_service.api.errors.json_server_error"
