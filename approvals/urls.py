from django.urls import path

from approvals import api, views

app_name = "approvals"

urlpatterns = [
    path("approvals/", views.inbox, name="inbox"),
    path("approvals/<int:pk>/", views.detail, name="detail"),
    path("approvals/<int:pk>/approve/", views.approve, name="approve"),
    path("approvals/<int:pk>/reject/", views.reject, name="reject"),
    path("api/approvals/", api.request_list, name="api_list"),
    path("api/approvals/<int:pk>/", api.request_detail, name="api_detail"),
    path("api/approvals/<int:pk>/approve/", api.approve, name="api_approve"),
    path("api/approvals/<int:pk>/reject/", api.reject, name="api_reject"),
]
