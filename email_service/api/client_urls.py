"""Routes for the client audience, included under /api/ (CONTRACT.md)."""

from django.urls import URLPattern, URLResolver, path

from email_service.api import client as views

urlpatterns: list[URLPattern | URLResolver] = [
    path("client/login", views.LoginView.as_view(), name="client-login"),
    path("client/logout", views.LogoutView.as_view(), name="client-logout"),
    path("client/stats", views.StatsView.as_view(), name="client-stats"),
    path("client/campaigns", views.CampaignsView.as_view(), name="client-campaigns"),
    path("client/campaigns/<uuid:campaign_id>/pause", views.CampaignPauseView.as_view(), name="client-campaign-pause"),
    path(
        "client/campaigns/<uuid:campaign_id>/resume", views.CampaignResumeView.as_view(), name="client-campaign-resume"
    ),
    path("client/replies", views.RepliesView.as_view(), name="client-replies"),
    path("client/timeline", views.TimelineView.as_view(), name="client-timeline"),
    path("client/mailboxes", views.MailboxesView.as_view(), name="client-mailboxes"),
    path("client/mailboxes/<uuid:mailbox_id>", views.MailboxDetailView.as_view(), name="client-mailbox"),
    path("client/change-password", views.ChangePasswordView.as_view(), name="client-change-password"),
    path("client/settings", views.SettingsView.as_view(), name="client-settings"),
]
