"""Routes of the web dashboard, included at /dashboard/."""

from django.urls import path

from email_service.web import views

app_name = "dashboard"

urlpatterns = [
    path("", views.page("overview"), name="overview"),
    path("login/", views.login_page, name="login"),
    path("campaigns/", views.page("campaigns"), name="campaigns"),
    path("replies/", views.page("replies"), name="replies"),
    path("mailboxes/", views.page("mailboxes"), name="mailboxes"),
    path("settings/", views.page("settings"), name="settings"),
]
