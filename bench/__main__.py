"""Run every ``bench/*_bench.py`` module's ``main()`` in turn, and ``bench/pgbench.py``
(``make bench``; name modules to run only those)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> None:
    only = set(sys.argv[1:])
    # The modules read their own options from sys.argv: the names given here are not theirs.
    sys.argv[1:] = []
    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__)):
        if (module.endswith("_bench") or module == "pgbench") and (not only or module in only):
            print(f"== {module}")
            importlib.import_module(f"bench.{module}").main()


main()
