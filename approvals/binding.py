"""The binding of an approval to exactly one statement (WF-03).

``binding_hash`` is an HMAC-SHA256, keyed from Django's SECRET_KEY, of the protocol, the
connection, the statement's kind and text and its bound parameter values (unmasked). Keyed
because the request row stores the statement masked: a plain hash of the real values would
let anyone who reads the row test guesses of a masked value offline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.utils.crypto import salted_hmac

_SALT = "airlock.approvals.binding"


def binding_hash(
    *, protocol: str, connection: str, statement: str, params: Sequence[str | None] = (), kind: str = "query"
) -> str:
    """The hash that an approval binds (64 hex characters)."""
    canonical = json.dumps(
        [protocol, connection, kind, statement, list(params)], ensure_ascii=False, separators=(",", ":")
    )
    return salted_hmac(_SALT, canonical, algorithm="sha256").hexdigest()
