"""Querysets whose SQL is built once and run again with other values (``BuiltQuery``).

The ORM builds a queryset's SQL anew each time it is evaluated. For the statements that
run on every console request and every inbox event (the session, the person with their
roles, the request as a reviewer may see it) that took more Python than the statement
took the database (docs/performance.md). ``BuiltQuery.of(queryset, *placeholders)`` keeps
the SQL and parameters the ORM built, and where each placeholder went; ``run(*values)`` is
a raw queryset of the same model with the values put there. The statement is the ORM's,
so what it checks is what the queryset checks.

A placeholder is a value the queryset holds exactly once among its parameters, spelt as
the database adapter receives it (a datetime on SQLite is the text Django sends; use the
field's ``get_db_prep_value``), and the values given to ``run`` are spelt the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet


@dataclass(frozen=True)
class BuiltQuery:
    """A queryset's SQL, built once, run again with the placeholders' values replaced.

    >>> built = BuiltQuery.of(Request.objects.filter(pk=-1), -1)  # doctest: +SKIP
    >>> built.run(42).prefetch_related("decisions")             # doctest: +SKIP
    """

    model: type[Model]
    alias: str
    sql: str
    params: tuple[Any, ...]
    slots: tuple[int, ...] = ()

    @classmethod
    def of(cls, queryset: QuerySet[Any], *placeholders: Any) -> BuiltQuery:
        sql, params = queryset.query.get_compiler(queryset.db).as_sql()
        slots = []
        for placeholder in placeholders:
            found = [
                n
                for n, value in enumerate(params)
                if type(value) is type(placeholder) and value == placeholder
            ]
            if len(found) != 1:
                raise ValueError(
                    f"the placeholder {placeholder!r} is in {len(found)} places of the query, not one"
                )
            slots.append(found[0])
        return cls(queryset.model, queryset.db, sql, tuple(params), tuple(slots))

    def run(self, *values: Any) -> RawQuerySet[Any]:
        if len(values) != len(self.slots):
            raise TypeError(f"this query takes {len(self.slots)} values, not {len(values)}")
        params = list(self.params)
        for slot, value in zip(self.slots, values, strict=True):
            params[slot] = value
        return self.model._default_manager.db_manager(self.alias).raw(self.sql, params)
