"""Routes for the tracking audience, included under /api/ (CONTRACT.md).

The pixel and click routes are normally answered earlier by `TrackingFastPathMiddleware`; these
entries describe them in the schema, let `reverse()` build them, and serve them if the
middleware is absent.
"""

from django.urls import URLPattern, URLResolver, path

from email_service.api.tracking import ReplyView, TrackClickView, TrackOpenView

urlpatterns: list[URLPattern | URLResolver] = [
    path("track/open/<str:pixel_id>.png", TrackOpenView.as_view(), name="track-open"),
    path("track/click/<str:click_id>", TrackClickView.as_view(), name="track-click"),
    path("track/reply", ReplyView.as_view(), name="track-reply"),
]
