"""The usage examples in the public docstrings run as written."""

from __future__ import annotations

import doctest

import pytest

from masking import policy, scanner


@pytest.mark.parametrize("module", [policy, scanner])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
