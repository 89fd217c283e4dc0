"""PromQL query templates: defaults, rendering with escaped values, and the namespace-scope check.

Query results end up in the policy's status, which anyone who can read the policy can
read. A custom query is therefore a way to read metrics, and must not reach outside the
policy's namespace. Queries are *templates*: the operator fills the placeholders with the
policy's own namespace and target (values escaped for PromQL strings and regexes), parses
the result with a real PromQL parser (``promql-parser``, the Rust parser Prometheus-
compatible databases use) and refuses it unless **every** vector selector — including
those inside range vectors, subqueries and ``or`` matcher groups — carries the matcher
``namespace="<the policy's namespace>"``. ``@`` modifiers are refused too (they would
read fixed past data and defeat staleness checks). Only when the cluster admin starts the
operator with ``--trust-custom-queries`` is any parsable PromQL accepted.

Each signal is a template whose result must be a single series in a fixed unit (see
:data:`SIGNALS`); :func:`combined_query` joins all of a policy's rendered queries into one
PromQL expression (each tagged with a ``rlscale_signal`` label) so a reconcile costs one
HTTP request per evaluation time instead of one per signal.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import promql_parser

#: Placeholders a template may use.
PLACEHOLDERS: tuple[str, ...] = ("namespace", "deployment", "pod_regex", "container", "window")
#: Longest template, and longest rendered query, accepted.
MAX_TEMPLATE_CHARS = 2000
MAX_RENDERED_CHARS = 8000
#: The label :func:`combined_query` tags each signal with.
SIGNAL_LABEL = "rlscale_signal"
#: Functions refused in untrusted queries: ``info`` joins series from outside the selectors.
_FORBIDDEN_FUNCTIONS = frozenset({"info"})
#: String forms where two PromQL parsers are most likely to disagree (a "parser differential"
#: could make our check and Prometheus read different matchers): refused in untrusted templates.
_EXOTIC_ESCAPES = re.compile(r"`|\\(?:[uUx]|[0-7])")


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal the operator reads: its CRD field, its result's unit, and the default template."""

    key: str
    field: str
    unit: str
    default: str


_SEL = 'namespace="{namespace}", pod=~"{pod_regex}"'
_CSEL = _SEL + ', container=~"{container}"'

SIGNALS: tuple[Signal, ...] = (
    Signal(
        "cpu_usage",
        "cpuUsage",
        "CPU cores per pod (mean over pods) used by the managed containers",
        "avg(sum by (pod) (rate(container_cpu_usage_seconds_total{" + _CSEL + "}[{window}])))",
    ),
    Signal(
        "memory_working_set",
        "memoryWorkingSet",
        "working-set bytes of the most-loaded pod (max over pods) of the managed containers",
        "max(sum by (pod) (last_over_time(container_memory_working_set_bytes{" + _CSEL + "}[{window}])))",
    ),
    Signal(
        "request_rate",
        "requestRate",
        "requests per second, whole Deployment",
        "sum(rate(http_requests_total{" + _SEL + "}[{window}]))",
    ),
    Signal(
        "error_rate",
        "errorRate",
        "failed requests / all requests (0..1)",
        "(sum(rate(http_requests_total{" + _SEL + ', code=~"5.."}[{window}])) or vector(0))'
        " / sum(rate(http_requests_total{" + _SEL + "}[{window}]))",
    ),
    Signal(
        "latency_p50",
        "latencyP50",
        "median latency, seconds",
        "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{" + _SEL + "}[{window}])))",
    ),
    Signal(
        "latency_p99",
        "latencyP99",
        "99th-percentile latency, seconds",
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{" + _SEL + "}[{window}])))",
    ),
    Signal(
        "in_flight",
        "inFlight",
        "requests in flight or queued, whole Deployment",
        "sum(last_over_time(http_requests_in_flight{" + _SEL + "}[{window}]))",
    ),
)
SIGNAL_BY_KEY: dict[str, Signal] = {s.key: s for s in SIGNALS}

# --- batched reads: one query per namespace for every policy on the default templates -------------------------

#: The label a batched query groups each workload's series by: the Deployment a pod belongs to.
WORKLOAD_LABEL = "rlscale_workload"
#: A pod's Deployment from its name: everything before ``-<pod-template-hash>-<suffix>``. A pod matches
#: :func:`pod_regex` of Deployment ``d`` exactly when this extracts ``d`` (the last two segments have no dashes).
_WORKLOAD_OF_POD = "(.+)-[a-z0-9]+-[a-z0-9]+"


def _by_workload(inner: str) -> str:
    return f'label_replace({inner}, "{WORKLOAD_LABEL}", "$1", "pod", "{_WORKLOAD_OF_POD}")'


@dataclass(frozen=True, slots=True)
class BatchedSignal:
    """A default template as one query for a whole namespace, and how a workload's value is read from it.

    ``per_pod`` is ``None`` when the query already yields one series per workload (the
    default template's aggregation grouped by :data:`WORKLOAD_LABEL` instead of filtered by
    the pod regex). The container-scoped signals depend on each policy's ``containers``, so
    their batch returns one series per (workload, pod, container) and the reader finishes
    the default template's aggregation in Python: sum over the policy's containers per pod,
    then ``avg`` or ``max`` over pods.
    """

    key: str
    template: str
    per_pod: str | None = None  # "avg" | "max"


_NS = 'namespace="{namespace}"'


def _rate_by_workload(metric: str, extra: str = "") -> str:
    return f"sum by ({WORKLOAD_LABEL}) (" + _by_workload(f"rate({metric}{{{_NS}{extra}}}[{{window}}])") + ")"


def _per_container(fn: str, metric: str) -> str:
    inner = _by_workload(f'{fn}({metric}{{{_NS}, container!=""}}[{{window}}])')
    return f"sum by ({WORKLOAD_LABEL}, pod, container) ({inner})"


def _quantile_by_workload(q: str) -> str:
    inner = _by_workload("rate(http_request_duration_seconds_bucket{" + _NS + "}[{window}])")
    return f"histogram_quantile({q}, sum by ({WORKLOAD_LABEL}, le) ({inner}))"


BATCHED: dict[str, BatchedSignal] = {
    b.key: b
    for b in (
        BatchedSignal("cpu_usage", _per_container("rate", "container_cpu_usage_seconds_total"), "avg"),
        BatchedSignal(
            "memory_working_set", _per_container("last_over_time", "container_memory_working_set_bytes"), "max"
        ),
        BatchedSignal("request_rate", _rate_by_workload("http_requests_total")),
        BatchedSignal(
            "error_rate",
            # "or 0 * total": a workload with requests but no 5xx series has error rate 0, as the
            # default's "or vector(0)" gives it (vector(0) has no workload label to divide by).
            "("
            + _rate_by_workload("http_requests_total", ', code=~"5.."')
            + " or 0 * "
            + _rate_by_workload("http_requests_total")
            + ") / "
            + _rate_by_workload("http_requests_total"),
        ),
        BatchedSignal("latency_p50", _quantile_by_workload("0.5")),
        BatchedSignal("latency_p99", _quantile_by_workload("0.99")),
        BatchedSignal(
            "in_flight",
            f"sum by ({WORKLOAD_LABEL}) ("
            + _by_workload("last_over_time(http_requests_in_flight{" + _NS + "}[{window}])")
            + ")",
        ),
    )
}


@functools.lru_cache(maxsize=1024)
def batched_query(keys: tuple[str, ...], namespace: str, window: str) -> str:
    """One PromQL expression for the batched signals ``keys`` of every workload in ``namespace``.

    Each signal is tagged with :data:`SIGNAL_LABEL` as in :func:`combined_query`. The result
    is scope-checked like an untrusted template (every selector pinned to ``namespace``),
    so the batch can never read another namespace, whatever the operator's settings.
    """
    missing = [k for k in keys if k not in BATCHED]
    if missing:
        raise KeyError(f"no batched form for {', '.join(missing)}")
    values = {"namespace": promql_string(namespace), "window": window}
    parts = [
        f"label_replace(({_PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], BATCHED[k].template)}), "
        f'"{SIGNAL_LABEL}", "{k}", "", "")'
        for k in keys
    ]
    query = " or ".join(parts)
    check_scope(query, namespace, "batched query")
    return query


class QueryError(ValueError):
    """A template that cannot be used; ``field`` names the CRD field (e.g. ``spec.prometheus.queries.cpuUsage``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def promql_string(value: str) -> str:
    """Escape a value for the inside of a double-quoted PromQL string."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    return out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def regex_literal(value: str) -> str:
    """A regex matching ``value`` literally (RE2 syntax), escaped for a PromQL string."""
    return promql_string(re.escape(value))


def pod_regex(deployment: str) -> str:
    """The pods of a Deployment: ``<name>-<pod-template-hash>-<suffix>`` (regexes are fully anchored)."""
    return re.escape(deployment) + "-[a-z0-9]+-[a-z0-9]+"


@dataclass(frozen=True, slots=True)
class Target:
    """What the placeholders are filled with: always the policy's own namespace and target."""

    namespace: str
    deployment: str
    containers: tuple[str, ...]
    window: str

    def values(self) -> dict[str, str]:
        return {
            "namespace": promql_string(self.namespace),
            "deployment": promql_string(self.deployment),
            "pod_regex": promql_string(pod_regex(self.deployment)),
            "container": "|".join(regex_literal(c) for c in self.containers),
            "window": self.window,
        }


_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def render(template: str, target: Target) -> str:
    """Fill the placeholders. Other braces (PromQL selectors) are left alone."""
    values = target.values()
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def _selectors(ast: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(ast, visit)
    return found


def _calls(ast: Any) -> list[str]:
    names: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.Call):
            names.append(node.func.name)
        return True

    promql_parser.walk(ast, visit)
    return names


def _scoped(group: list[Any], namespace: str) -> bool:
    return any(m.name == "namespace" and m.op == promql_parser.MatchOp.Equal and m.value == namespace for m in group)


def check_scope(query: str, namespace: str, field: str) -> None:
    """Raise :class:`QueryError` unless every selector of ``query`` is pinned to ``namespace``."""
    ast = _parse(query, field)
    for fn in _calls(ast):
        if fn in _FORBIDDEN_FUNCTIONS:
            raise QueryError(field, f"function {fn}() is not allowed: it reads series outside the selectors")
    for sel in _selectors(ast):
        groups = [list(sel.matchers.matchers)] if not sel.matchers.or_matchers else []
        groups += [list(g) for g in sel.matchers.or_matchers]
        if not groups or not all(_scoped(g, namespace) for g in groups):
            shown = sel.prettify() if len(sel.prettify()) < 200 else sel.prettify()[:200] + "…"
            raise QueryError(
                field,
                f'selector {shown} must be restricted with namespace="{namespace}" '
                "(an exact match on the policy's own namespace; the operator was not started with "
                "--trust-custom-queries)",
            )
        if sel.at is not None:
            raise QueryError(field, "the @ modifier is not allowed: queries must read current data")


def _parse(query: str, field: str) -> Any:
    try:
        return promql_parser.parse(query)
    except Exception as exc:  # the parser raises ValueError/RuntimeError depending on the error
        raise QueryError(field, f"not valid PromQL: {exc}") from exc


def _check_result_shape(ast: Any, field: str) -> None:
    # The combined query wraps each signal in label_replace(), which needs an instant vector.
    if isinstance(ast, promql_parser.NumberLiteral | promql_parser.StringLiteral):
        raise QueryError(field, "must select data, not a literal")
    if isinstance(ast, promql_parser.MatrixSelector | promql_parser.SubqueryExpr):
        raise QueryError(field, "must return an instant vector (one series), not a range vector")


@dataclass(frozen=True, slots=True)
class RenderedQuery:
    """A signal's validated, rendered query."""

    key: str
    field: str
    query: str


def build_queries(
    templates: dict[str, str | None], target: Target, *, trusted: bool, field_prefix: str = "spec.prometheus.queries"
) -> tuple[RenderedQuery, ...]:
    """Render and validate every signal's query (custom template or default).

    ``templates`` maps signal keys (``cpu_usage`` …) to a custom template or ``None``.
    Raises :class:`QueryError` naming the field of the first bad template.

    The result depends on nothing but the arguments, and every reconcile of an unchanged
    policy asks for the same one, so it is cached: parsing seven templates and walking
    their syntax trees was a quarter of the operator's CPU at 1000 policies
    (bench/operator_scale.py --profile). Errors are not cached (a bad spec is rare and
    re-checked each time).
    """
    key = tuple(sorted((k, v) for k, v in templates.items() if v))
    return _build_queries_cached(key, target, trusted, field_prefix)


@functools.lru_cache(maxsize=8192)  # one entry per policy spec; ~3 KB each
def _build_queries_cached(
    templates_key: tuple[tuple[str, str], ...], target: Target, trusted: bool, field_prefix: str
) -> tuple[RenderedQuery, ...]:
    templates = dict(templates_key)
    out: list[RenderedQuery] = []
    for signal in SIGNALS:
        field = f"{field_prefix}.{signal.field}"
        template = templates.get(signal.key) or signal.default
        if len(template) > MAX_TEMPLATE_CHARS:
            raise QueryError(field, f"template is {len(template)} characters long, at most {MAX_TEMPLATE_CHARS}")
        if "\x00" in template:
            raise QueryError(field, "template contains a NUL character")
        if not trusted and _EXOTIC_ESCAPES.search(template):
            raise QueryError(
                field,
                "raw (backtick) strings and \\u, \\U, \\x or octal escapes are not allowed in untrusted queries",
            )
        query = render(template, target)
        if len(query) > MAX_RENDERED_CHARS:
            raise QueryError(field, f"rendered query is {len(query)} characters long, at most {MAX_RENDERED_CHARS}")
        ast = _parse(query, field)
        _check_result_shape(ast, field)
        if not trusted:
            check_scope(query, target.namespace, field)
        out.append(RenderedQuery(signal.key, field, query))
    return tuple(out)


def combined_query(queries: tuple[RenderedQuery, ...] | list[RenderedQuery]) -> str:
    """One PromQL expression returning every signal, each tagged ``rlscale_signal="<key>"``.

    ``or`` keeps every series of both sides when their label sets differ, which the tag
    guarantees; a signal whose query returns nothing is simply absent.
    """
    parts = [f'label_replace(({q.query}), "{SIGNAL_LABEL}", "{q.key}", "", "")' for q in queries]
    return " or ".join(parts)
