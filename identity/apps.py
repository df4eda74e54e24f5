from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Identity: people, groups, agents and tokens"

    def ready(self) -> None:
        from identity import checks, signals  # noqa: F401
