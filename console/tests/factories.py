"""Objects the console tests act on, made through the action functions like real ones."""

from __future__ import annotations

from typing import Any

from gateway import actions as gateway_actions
from identity import actions as identity_actions


def make_connection(name: str = "shop", kind: str = "postgres", **overrides: Any):  # type: ignore[no-untyped-def]
    fields: dict[str, Any] = {
        "postgres": {
            "host": "127.0.0.1",
            "port": 5432,
            "database": "shop",
            "username": "shop_app",
            "options": {"sslmode": "prefer"},
            "secret_values": {"password": "pg-Secret-Sentinel-0001"},
        },
        "ssh": {
            "host": "127.0.0.1",
            "port": 22,
            "username": "deploy",
            "secret_values": {"password": "ssh-Secret-Sentinel-0002"},
        },
        "kubernetes": {
            "host": "k8s.example.test",
            "port": 6443,
            "options": {"namespace": "default"},
            "secret_values": {"token": "k8s-Secret-Sentinel-0003"},
        },
    }[kind]
    fields.update(overrides)
    identity_actions.do_create_group(None, "agents")
    return gateway_actions.do_create_connection(None, name=name, kind=kind, groups=["agents"], **fields)


def make_agent(name: str = "billing-bot", **overrides: Any):  # type: ignore[no-untyped-def]
    return identity_actions.do_create_agent(
        None, name, groups=overrides.pop("groups", ["agents"]), **overrides
    )
