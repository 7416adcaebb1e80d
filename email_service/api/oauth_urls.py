"""Routes for the oauth audience, included under /api/ (CONTRACT.md)."""

from django.urls import URLPattern, URLResolver, path

from email_service.api.oauth import OAuthCallbackView, OAuthInitiateView

urlpatterns: list[URLPattern | URLResolver] = [
    path("oauth/initiate/<uuid:client_id>", OAuthInitiateView.as_view(), name="oauth-initiate"),
    path("oauth/callback", OAuthCallbackView.as_view(), name="oauth-callback"),
]
