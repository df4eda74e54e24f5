"""The one error masking raises.

Callers on the data path turn it into an error for the agent: a result that could not be
masked is never sent (fail closed).
"""

from __future__ import annotations


class MaskingError(Exception):
    """Masking could not be done; the unmasked data must not be passed on.

    The message never holds any value from the data being masked, so it is safe to log and
    to show to the agent.
    """


class MaskingSpecError(ValueError):
    """A masking spec was refused; ``problems`` lists every ``(path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
