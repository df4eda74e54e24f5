from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway and connections"

    def ready(self) -> None:
        from gateway import checks  # noqa: F401 - registers the deployment checks
