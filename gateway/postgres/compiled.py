"""The relay as the gateway runs it: its compiled build when usable (``gateway.native``).

``gateway/postgres/relay.py`` is compiled with mypyc by ``make venv``; ``relay`` here is
that build when it was made from the source in use, else the source module itself. Use
the classes from here (the server and the relay's tests do): a compiled ``Relay`` and an
interpreted ``ReviewNeeded`` are different classes.
"""

from __future__ import annotations

from gateway import native
from gateway.postgres import relay as _source

relay = native.load(_source)
