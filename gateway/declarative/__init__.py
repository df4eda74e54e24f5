"""Declarative configuration: ``manage.py apply`` and ``manage.py export``.

- ``loader``: YAML with line numbers (pure)
- ``schema``: structural checks of a file, giving the desired state (pure)
- ``plan``: reference checks against the database, the plan, and applying it
- ``export``: the current state as the same YAML, secrets as ``${NAME}`` placeholders
"""
