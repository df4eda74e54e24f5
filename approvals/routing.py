from django.urls import path

from approvals.consumers import ApprovalInboxConsumer

websocket_urlpatterns = [
    path("ws/approvals/", ApprovalInboxConsumer.as_asgi()),
]
