"""The policy engine: compile a policy spec once, then decide on requests (pure, no I/O).

>>> policy = compile_policy("agents-default", 3, {
...     "default": "deny",
...     "rules": [{"name": "reads", "match": {"operations": ["read"]}, "action": "allow"}],
... })
>>> policy.evaluate(Request(protocol="postgres", connection="shop", agent="billing-bot",
...                         groups=frozenset({"agents"}), statement="SELECT 1")).action
<Action.ALLOW: 'allow'>

Semantics (docs/policies.md has the full language):

* Rules are tried in order for each statement; the first rule whose match keys all match
  decides; ``observe`` rules are noted in ``Decision.observed`` and evaluation goes on; the
  policy's ``default`` applies when no rule matches.
* A match key that lists things (operations, tables, functions, settings) is read in the
  safe direction for the rule's action: an ``allow`` rule matches only when *everything*
  the statement does of that kind is listed (and it does at least one such thing); a
  ``deny``/``review`` rule matches when *anything* listed is done.
* A string of several statements gets the strictest of their decisions (deny > review >
  allow). A statement that does not parse, or cannot be judged, gets ``on_parse_error``.
* Decisions are cached per compiled policy (a policy version compiles to a new object);
  the key holds everything a decision depends on (see ``_cache_key``).
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from policies import sql
from policies.classification import Classification, StatementInfo, plain_statement
from policies.functions import FUNCTION_SETS
from policies.spec import as_list, parse_duration, validate_policy_spec
from policies.types import Action, Decision, Request

__all__ = [
    "CompiledPolicy",
    "PolicyError",
    "compile_policy",
    "register_classifier",
]

DEFAULT_CACHE_SIZE = 10_000
_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.DENY: 2}


class PolicyError(ValueError):
    """A policy spec that cannot be compiled; ``problems`` lists ``(path, message)``."""

    def __init__(self, name: str, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"policy {name!r} is not valid:\n{lines}")


# --- classifiers per protocol -----------------------------------------------------------

Classifier = Callable[[Request], Classification]
SessionKey = Callable[[Request], Hashable]


def _classify_postgres(request: Request) -> Classification:
    if request.kind == "function_call":
        return sql.classify_function_call(request.statement)
    return sql.classify(request.statement, request.session)


def _postgres_session_key(request: Request) -> Hashable:
    return sql.session_key(request.statement, request.session)


def _postgres_shape(request: Request) -> tuple[Hashable, str, Callable[[str], str]] | None:
    if request.kind != "query":
        return None
    return sql.simple_shape(request.statement, request.session)


# Protocols whose statements may be known by shape before they are classified: the shape,
# the statement's text and its normalizer, as the classification would give them, or None.
Shaper = Callable[[Request], tuple[Hashable, str, Callable[[str], str]] | None]
_SHAPERS: dict[str, Shaper] = {"postgres": _postgres_shape}


def _classify_plain(request: Request) -> Classification:
    return Classification(statements=(plain_statement(request.statement, request.kind),))


_CLASSIFIERS: dict[str, tuple[Classifier, SessionKey]] = {
    "postgres": (_classify_postgres, _postgres_session_key),
}


def register_classifier(protocol: str, classify: Classifier, session_key: SessionKey | None = None) -> None:
    """Install the classifier of a protocol (shell for ``ssh``, ``kubernetes`` exec...).

    ``session_key(request)`` must return everything in ``request.session`` that the
    classification depends on (it becomes part of the decision cache key). A protocol with
    no classifier is still evaluated: its statement is known only by its text, so only
    rules on who/where (protocol, connections, agents, groups) and ``regex`` can match.
    """
    _CLASSIFIERS[protocol] = (classify, session_key or (lambda request: None))
    _SHAPERS.pop(protocol, None)  # a shape found by the old classifier's rules means nothing


def _classifier(protocol: str) -> tuple[Classifier, SessionKey]:
    return _CLASSIFIERS.get(protocol, (_classify_plain, lambda request: None))


# --- matching ---------------------------------------------------------------------------


def _glob_regex(patterns: Iterable[str], ignore_case: bool) -> re.Pattern[str]:
    joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return re.compile(joined, re.IGNORECASE if ignore_case else 0)


@dataclass(frozen=True, slots=True)
class _View:
    """A statement as one rule sees it: operations and facts after trusted functions."""

    info: StatementInfo
    operations: frozenset[str]
    facts: frozenset[str]
    normalized: Callable[[], str]


Matcher = Callable[[Request, _View], bool]


def _table_matcher(patterns: list[str], covering: bool) -> Callable[[str], bool]:
    split = [p.split(".", 1) if "." in p else ["*", p] for p in patterns]
    full = _glob_regex((f"{s}.{n}" for s, n in split), ignore_case=not covering)
    names_only = _glob_regex((n for _, n in split), ignore_case=True)

    def matches(table: str) -> bool:
        if table.startswith("*."):
            # An unqualified name under a search_path the engine could not follow: it may be
            # any schema's table. A deny rule catches it by name; an allow rule never covers it.
            return not covering and names_only.match(table[2:]) is not None
        return full.match(table) is not None

    return matches


def _function_matcher(patterns: list[str], covering: bool) -> Callable[[str], bool]:
    members: set[str] = set()
    globs = []
    for pattern in patterns:
        if pattern.startswith("@"):
            members |= FUNCTION_SETS[pattern[1:]]
        else:
            globs.append(pattern)
    glob = _glob_regex(globs, ignore_case=not covering) if globs else None

    def matches(function: str) -> bool:
        if function in members or (glob is not None and glob.match(function)):
            return True
        if covering:
            return False
        # A deny rule also catches a same-named function in another schema or in another
        # case: it is not the built-in, but it may stand in for it.
        base = function.rsplit(".", 1)[-1]
        return base.lower() in members or (glob is not None and glob.match(base) is not None)

    return matches


def _setting_matcher(patterns: list[str], covering: bool) -> Callable[[str], bool]:
    glob = _glob_regex(patterns, ignore_case=True)

    def matches(setting: str) -> bool:
        if setting == "*":  # a setting named at run time may be any of them
            return not covering
        return glob.match(setting) is not None

    return matches


_MEMO_SIZE = 4096


def _memo(match: Callable[[str], bool]) -> Callable[[str], bool]:
    """``match`` remembered per name (a table or function name always matches alike)."""
    seen: dict[str, bool] = {}

    def remembered(name: str) -> bool:
        found = seen.get(name)
        if found is None:
            found = match(name)
            if len(seen) < _MEMO_SIZE:
                seen[name] = found
        return found

    return remembered


def _over(items: Callable[[_View], frozenset[str]], match: Callable[[str], bool], covering: bool) -> Matcher:
    match = _memo(match)
    if covering:

        def every(request: Request, view: _View) -> bool:
            found = items(view)
            if not found:
                return False
            for item in found:
                if not match(item):
                    return False
            return True

        return every

    def any_of(request: Request, view: _View) -> bool:
        for item in items(view):
            if match(item):
                return True
        return False

    return any_of


def _in_set(value: Callable[[Request], str], allowed: frozenset[str]) -> Matcher:
    return lambda request, view: value(request) in allowed


def _glob(value: Callable[[Request], str], rx: re.Pattern[str]) -> Matcher:
    return lambda request, view: rx.match(value(request)) is not None


def _groups(groups: frozenset[str]) -> Matcher:
    return lambda request, view: not groups.isdisjoint(request.groups)


def _operations(ops: frozenset[str], covering: bool) -> Matcher:
    if covering:
        return lambda request, view: bool(view.operations) and view.operations <= ops
    return lambda request, view: not ops.isdisjoint(view.operations)


def _facts(facts: frozenset[str]) -> Matcher:
    return lambda request, view: not facts.isdisjoint(view.facts)


def _no_where(want: bool) -> Matcher:
    return lambda request, view: ("no_where" in view.facts) is want


class _Regex:
    """The ``regex`` match key (a class, not a closure: the policy lists its patterns)."""

    __slots__ = ("rx",)

    def __init__(self, rx: re.Pattern[str]) -> None:
        self.rx = rx

    def __call__(self, request: Request, view: _View) -> bool:
        return self.rx.search(view.normalized()) is not None


def _tables(view: _View) -> frozenset[str]:
    return view.info.tables


def _functions(view: _View) -> frozenset[str]:
    return view.info.functions


def _settings(view: _View) -> frozenset[str]:
    return view.info.settings


def _once(compute: Callable[[], str]) -> Callable[[], str]:
    """``compute`` run at most once (the normalized text several regex rules look at)."""
    done: list[str] = []

    def get() -> str:
        if not done:
            done.append(compute())
        return done[0]

    return get


# Match keys from the cheapest to test to the dearest: a rule's keys must all match, so
# they are tried in this order and the first that fails ends the rule (``regex`` needs
# the normalized statement, which is computed only when a rule gets that far).
_KEY_ORDER = {
    key: index
    for index, key in enumerate(
        ("protocol", "connections", "agents", "groups", "operations", "facts", "no_where",
         "settings", "functions", "tables", "regex")
    )
}  # fmt: skip


def _matchers(match: dict[str, Any], covering: bool) -> list[Matcher]:
    result: list[Matcher] = []
    for key, raw in sorted(match.items(), key=lambda item: _KEY_ORDER.get(item[0], len(_KEY_ORDER))):
        if key == "protocol":
            result.append(_in_set(lambda r: r.protocol, frozenset(as_list(raw))))
        elif key == "connections":
            result.append(_glob(lambda r: r.connection, _glob_regex(as_list(raw), ignore_case=False)))
        elif key == "agents":
            result.append(_glob(lambda r: r.agent, _glob_regex(as_list(raw), ignore_case=False)))
        elif key == "groups":
            result.append(_groups(frozenset(as_list(raw))))
        elif key == "operations":
            result.append(_operations(frozenset(as_list(raw)), covering))
        elif key == "tables":
            result.append(_over(_tables, _table_matcher(as_list(raw), covering), covering))
        elif key == "functions":
            result.append(_over(_functions, _function_matcher(as_list(raw), covering), covering))
        elif key == "settings":
            result.append(_over(_settings, _setting_matcher(as_list(raw), covering), covering))
        elif key == "facts":
            result.append(_facts(frozenset(as_list(raw))))
        elif key == "no_where":
            result.append(_no_where(bool(raw)))
        elif key == "regex":
            result.append(_Regex(re.compile(raw, re.IGNORECASE)))
    return result


# --- the compiled policy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Review:
    reviewers: tuple[str, ...]
    approvals: int
    timeout_seconds: int | None
    approval_mode: str | None = None  # None: the connection's option decides

    @classmethod
    def of(cls, spec: dict[str, Any]) -> _Review | None:
        if not spec.get("reviewers"):
            return None
        timeout = spec.get("timeout")
        return cls(
            reviewers=tuple(spec["reviewers"]),
            approvals=int(spec.get("approvals", 1)),
            timeout_seconds=parse_duration(timeout) if timeout is not None else None,
            approval_mode=spec.get("approval_mode"),
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    action: str  # allow | deny | review | observe
    would: str  # what an observe rule would do
    message: str
    review: _Review | None
    matchers: tuple[Matcher, ...]

    def matches(self, request: Request, view: _View) -> bool:
        for matcher in self.matchers:
            if not matcher(request, view):
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Outcome:
    """The decision on one statement."""

    action: Action
    rule: str | None
    message: str
    review: _Review | None


class CompiledPolicy:
    """A policy ready to decide: immutable apart from its bounded decision cache."""

    def __init__(
        self,
        name: str,
        version: int,
        default: str,
        on_parse_error: str,
        rules: tuple[_Rule, ...],
        review: _Review | None,
        trusted_functions: tuple[str, ...],
        cache_size: int,
    ) -> None:
        self.name = name
        self.version = version
        self.default = Action(default)
        self.on_parse_error = Action(on_parse_error)
        self.rules = rules
        self.review = review
        self.trusted = _glob_regex(trusted_functions, ignore_case=False) if trusted_functions else None
        self.cache_size = cache_size
        # First in, first out. An OrderedDict, not a dict: deleting a dict's first key
        # leaves a hole that every later ``next(iter(...))`` walks over until the dict is
        # rebuilt, so evicting from the front cost 5-8 µs a decision once the cache was
        # full (pgbench sends a new text every statement), against about 1 µs here.
        self._cache: OrderedDict[Hashable, Decision] = OrderedDict()
        # Decisions per statement shape (``Classification.shape``): statements that differ
        # only in their constants (pgbench's ``... WHERE aid = 412345``, an agent's lookups)
        # have one classification, so they get one decision but for the text, given the same
        # request context and the same outcome of every ``regex`` of the policy (the one
        # match key that sees constants). Same bound and eviction as ``_cache``.
        self._shapes: OrderedDict[Hashable, Decision] = OrderedDict()
        # The search of each distinct ``regex`` of the policy (``_regex_outcomes``).
        self._searches = tuple(
            rx.search
            for rx in dict.fromkeys(
                matcher.rx for rule in rules for matcher in rule.matchers if isinstance(matcher, _Regex)
            )
        )
        self.hits = 0
        self.shape_hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"<CompiledPolicy {self.name} v{self.version}: {len(self.rules)} rules>"

    # -- public -------------------------------------------------------------------------

    def evaluate(self, request: Request) -> Decision:
        """The decision on ``request`` (cached; a cached ``Decision`` is shared, read it only)."""
        classify, session_key = _classifier(request.protocol)
        if len(request.statement) > sql.MAX_CACHED_TEXT:
            self.misses += 1
            return self._decide(request, classify(request))
        groups = request.groups if isinstance(request.groups, frozenset) else frozenset(request.groups)
        key = (
            request.statement,
            request.kind,
            request.protocol,
            request.connection,
            request.agent,
            groups,
            session_key(request),
        )
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        shaper = _SHAPERS.get(request.protocol)
        known = shaper(request) if shaper is not None else None
        if known is not None:
            # A statement of a shape decided before, with new constants: the decision is
            # that shape's, with this statement's text. Not kept by its text: finding it
            # again this way costs about what the text's cache entry would.
            shape, text, normalizer = known
            template = self._shapes.get((shape, key[1:], self._regex_outcomes(lambda: normalizer(text))))
            if template is not None:
                self.shape_hits += 1
                return with_text(template, text)
        classification = classify(request)
        shape = classification.shape
        if shape is None:
            decision = self._decide(request, classification)
        else:
            shape_key = (shape, key[1:], self._regex_outcomes(lambda: classification.normalized(0)))
            template = self._shapes.get(shape_key)
            if template is not None:
                self.shape_hits += 1
                decision = with_text(template, classification.statements[0].text)
            else:
                decision = self._decide(request, classification)
                sql.bounded_put(self._shapes, shape_key, decision, self.cache_size)
        sql.bounded_put(self._cache, key, decision, self.cache_size)
        return decision

    def _regex_outcomes(self, normalized: Callable[[], str]) -> tuple[bool, ...]:
        """Which of the policy's ``regex`` matchers match the statement's normalized text,
        ``normalized()``, asked only when there are any (part of a decision's key per
        shape: the rest of a statement's shape decides alike)."""
        if not self._searches:
            return ()
        return self._outcomes(normalized())

    def _outcomes(self, text: str) -> tuple[bool, ...]:
        return tuple([search(text) is not None for search in self._searches])

    def outcomes_by_shape(
        self, key: sql.SimpleKey, session: dict[str, Any] | None
    ) -> tuple[bool, ...] | None:
        """What of a statement besides its shape and its request's context this policy's
        decision depends on: the outcome of each ``regex`` rule on the normalized text of
        the statement whose simple key is ``key`` (``sql.shape_key``), found from its
        shape's template; () without ``regex`` rules; None when it cannot be had without a
        parse. Statements of one shape with equal outcomes get one decision but for their
        text (``gateway.decision.DecisionPoint`` keeps a session's allowed shapes by them)."""
        if not self._searches:
            return ()
        text = sql.rendered_by_key(key, session)
        return None if text is None else self._outcomes(text)

    def classify(self, request: Request) -> Classification:
        return _classifier(request.protocol)[0](request)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._shapes.clear()

    # -- deciding -----------------------------------------------------------------------

    def _view(self, info: StatementInfo, classification: Classification, index: int) -> _View:
        operations, facts = info.operations, info.facts
        if self.trusted is not None and info.unknown_functions:
            remaining = [f for f in info.unknown_functions if not self.trusted.match(f)]
            if not remaining:
                operations = info.known_operations
                facts = facts - {"unknown_function"}
        return _View(info, operations, facts, _once(lambda: classification.normalized(index)))

    def _fallback(self, action: Action, why: str) -> _Outcome:
        return _Outcome(action, None, why, self.review if action is Action.REVIEW else None)

    def _decide_statement(self, request: Request, view: _View, observed: list[str]) -> _Outcome:
        for rule in self.rules:
            if not rule.matches(request, view):
                continue
            if rule.action == "observe":
                if rule.name not in observed:
                    observed.append(rule.name)
                continue
            action = Action(rule.action)
            return _Outcome(action, rule.name, rule.message, rule.review)
        return self._fallback(
            self.default, f"no rule matched: the default of policy {self.name!r} is {self.default}"
        )

    def _decide(self, request: Request, classification: Classification) -> Decision:
        observed: list[str] = []
        if classification.error is not None:
            outcome = self._fallback(
                self.on_parse_error, f"the statement could not be parsed: {classification.error}"
            )
            return self._decision(outcome, [outcome], [], classification, observed)
        if not classification.statements:
            outcome = _Outcome(Action.ALLOW, None, "empty statement", None)
            return self._decision(outcome, [], [], classification, observed)
        outcomes = []
        for index, info in enumerate(classification.statements):
            if info.error is not None:
                outcomes.append(
                    self._fallback(self.on_parse_error, f"the statement cannot be judged: {info.error}")
                )
                continue
            outcomes.append(
                self._decide_statement(request, self._view(info, classification, index), observed)
            )
        strictest = max(outcomes, key=lambda o: _SEVERITY[o.action])
        final = next(o for o in outcomes if o.action is strictest.action)
        if final.action is Action.REVIEW:
            final = self._merge_reviews(final, [o for o in outcomes if o.action is Action.REVIEW])
        return self._decision(final, outcomes, list(classification.statements), classification, observed)

    def _merge_reviews(self, first: _Outcome, reviews: list[_Outcome]) -> _Outcome:
        """One approval for several held statements: reviewers every rule accepts."""
        if any(o.review is None for o in reviews):
            return _Outcome(Action.DENY, first.rule, "a review has no reviewers configured", None)
        groups = [o.review.reviewers for o in reviews if o.review is not None]
        common = tuple(g for g in groups[0] if all(g in other for other in groups[1:]))
        if not common:
            return _Outcome(
                Action.DENY,
                first.rule,
                "these statements need approval from different reviewer groups: send them separately",
                None,
            )
        timeouts = [o.review.timeout_seconds for o in reviews if o.review and o.review.timeout_seconds]
        # "return" when any held statement's rule says so (the agent is never held against
        # a rule that says not to hold it), else "wait" when one says that, else the connection's.
        modes = {o.review.approval_mode for o in reviews if o.review is not None}
        merged = _Review(
            reviewers=common,
            approvals=max(o.review.approvals for o in reviews if o.review is not None),
            timeout_seconds=min(timeouts) if timeouts else None,
            approval_mode="return" if "return" in modes else "wait" if "wait" in modes else None,
        )
        return _Outcome(Action.REVIEW, first.rule, first.message, merged)

    def _decision(
        self,
        final: _Outcome,
        outcomes: list[_Outcome],
        statements: list[StatementInfo],
        classification: Classification,
        observed: list[str],
    ) -> Decision:
        reasons = []
        for index, outcome in enumerate(outcomes):
            label = statements[index].statement if index < len(statements) else "statement"
            by = f"rule {outcome.rule!r}" if outcome.rule else outcome.message
            reasons.append(f"statement {index + 1} ({label}): {outcome.action} by {by}")
        if observed:
            reasons.extend(f"observe rule {name!r} matched" for name in observed)
        message = final.message or _default_message(final, self.name)
        details: dict[str, Any] = {
            "statements": [
                {**info.as_dict(), "action": str(outcomes[i].action), "rule": outcomes[i].rule}
                for i, info in enumerate(statements)
            ],
            "error": classification.error,
        }
        fields = ("operations", "tables_read", "tables_written", "functions", "settings", "facts")
        if len(statements) == 1:
            only = statements[0]
            for field in fields:
                details[field] = sorted(getattr(only, field))
        else:
            for field in fields:
                details[field] = sorted({item for info in statements for item in getattr(info, field)})
        review = final.review
        return Decision(
            action=final.action,
            rule=final.rule,
            message=message,
            reasons=tuple(reasons),
            classification=details,
            policy=self.name,
            policy_version=self.version,
            reviewers=review.reviewers if review else (),
            approvals_needed=review.approvals if review else 1,
            timeout_seconds=review.timeout_seconds if review else None,
            approval_mode=review.approval_mode if review else None,
            observed=tuple(observed),
            session_effects=tuple(effect for info in statements for effect in info.effects),
        )


def with_text(template: Decision, text: str) -> Decision:
    """``template`` (the decision on a statement of the same shape) for the statement ``text``.

    Only the statement's text differs between statements of one shape; built without
    ``dataclasses.replace`` (a frozen dataclass's ``__init__`` costs more than the rest).
    """
    details = dict(template.classification)
    details["statements"] = [{**details["statements"][0], "text": text}]
    decision = object.__new__(Decision)
    decision.__dict__.update(template.__dict__)
    decision.__dict__["classification"] = details
    return decision


def _default_message(outcome: _Outcome, policy: str) -> str:
    verb = {Action.ALLOW: "allowed", Action.DENY: "denied", Action.REVIEW: "held for review"}[outcome.action]
    return f"{verb} by rule {outcome.rule!r} of policy {policy!r}"


def compile_policy(
    name: str,
    version: int,
    spec: Any,
    known_groups: Iterable[str] | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    *,
    path: str = "policy",
) -> CompiledPolicy:
    """Check ``spec`` completely and compile it; raise ``PolicyError`` listing every problem.

    ``known_groups``: the groups that exist and have members. When given, a review (rule or
    default) naming any other group is a problem: a review nobody can approve must be fixed
    in the policy, not discovered when a statement waits for it.

    ``path`` prefixes the path of every problem (``policies[2]`` in an ``apply`` file).
    """
    problems = validate_policy_spec(spec, path)
    if problems:
        raise PolicyError(name, problems)
    if known_groups is not None:
        known = set(known_groups)
        reviewed = [(path, spec)] + [(f"{path}.rules[{i}]", r) for i, r in enumerate(spec.get("rules", []))]
        for where, item in reviewed:
            for index, group in enumerate(item.get("reviewers") or []):
                if group not in known:
                    problems.append(
                        (
                            f"{where}.reviewers[{index}]",
                            f"reviewer group {group!r} does not exist or has no members",
                        )
                    )
        if problems:
            raise PolicyError(name, problems)
    rules = []
    for raw in spec.get("rules", []):
        action = raw["action"]
        would = raw.get("would", "deny") if action == "observe" else action
        rules.append(
            _Rule(
                name=raw["name"],
                action=action,
                would=would,
                message=raw.get("message", ""),
                review=_Review.of(raw) if action == "review" else None,
                matchers=tuple(_matchers(raw.get("match") or {}, covering=would == "allow")),
            )
        )
    return CompiledPolicy(
        name=name,
        version=version,
        default=spec.get("default", "deny"),
        on_parse_error=spec.get("on_parse_error", "deny"),
        rules=tuple(rules),
        review=_Review.of(spec),
        trusted_functions=tuple(as_list(spec.get("trusted_functions", []))),
        cache_size=max(1, cache_size),
    )
