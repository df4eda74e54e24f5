from django.urls import path

from recordings.consumers import LiveSessionConsumer

websocket_urlpatterns = [
    path("ws/recordings/<uuid:session_id>/", LiveSessionConsumer.as_asgi()),
]
