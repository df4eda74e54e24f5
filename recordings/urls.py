from django.urls import path

from recordings import views

app_name = "recordings"

urlpatterns = [
    path("", views.session_list, name="session_list"),
    path("public-key.pem", views.public_key, name="public_key"),
    path("retention/", views.retention, name="retention"),
    path("<uuid:pk>/", views.session_detail, name="session_detail"),
    path("<uuid:pk>/events.json", views.session_events, name="session_events"),
    path("<uuid:pk>/integrity.json", views.session_integrity, name="session_integrity"),
    path("<uuid:pk>/export.jsonl", views.export_jsonl, name="export_jsonl"),
    path("<uuid:pk>/export.cast", views.export_cast, name="export_cast"),
    path("<uuid:pk>/terminate/", views.session_terminate, name="session_terminate"),
    path("<uuid:pk>/hold/", views.session_hold, name="session_hold"),
]
