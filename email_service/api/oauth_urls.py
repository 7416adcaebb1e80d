"""Routes for the oauth audience, included under /api/ (CONTRACT.md)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
