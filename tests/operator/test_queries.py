"""Query templates: defaults render and parse; hostile templates cannot read other namespaces."""

from __future__ import annotations

import promql_parser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlscale.operator.queries import (
    SIGNALS,
    QueryError,
    Target,
    build_queries,
    check_scope,
    combined_query,
    promql_string,
    render,
)

TARGET = Target("shop", "web", ("app",), "1m")


def test_defaults_render_scoped_and_parse() -> None:
    queries = build_queries({}, TARGET, trusted=False)
    assert [q.key for q in queries] == [s.key for s in SIGNALS]
    for q in queries:
        assert "{namespace}" not in q.query and 'namespace="shop"' in q.query
        check_scope(q.query, "shop", q.field)
    promql_parser.parse(combined_query(queries))


HOSTILE = {
    "other namespace": 'sum(rate(container_cpu_usage_seconds_total{namespace="kube-system"}[1m]))',
    "no namespace matcher": "sum(rate(container_cpu_usage_seconds_total[1m]))",
    "all metrics": '{__name__=~".+"}',
    "regex namespace": 'sum(x{namespace=~"shop|kube-system"})',
    "regex namespace matching own": 'sum(x{namespace=~"shop"})',
    "negative namespace": 'sum(x{namespace!="shop"})',
    "second selector unscoped": 'sum(x{namespace="shop"}) / sum(y)',
    "unscoped in subquery": 'max_over_time(sum(y{job="a"})[5m:1m])',
    "or-matcher group unscoped": 'sum(x{namespace="shop" or namespace="other"})',
    "at modifier": 'sum(x{namespace="shop"} @ 1700000000)',
    "info join": 'sum(info(x{namespace="shop"}))',
    "placeholder used for another label": 'sum(x{pod="{namespace}"})',
    "backtick raw string": "sum(x{namespace=`shop`})",
    "unicode escape": 'sum(x{namespace="sh\\u006fp"})',
    "absurd length": 'sum(x{namespace="shop"})' + " + 1" * 600,
    "not promql": "sum(x{namespace=",
    "literal": "42",
    "range vector": 'x{namespace="shop"}[5m]',
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_are_refused_with_the_field(template: str) -> None:
    with pytest.raises(QueryError) as err:
        build_queries({"cpu_usage": template}, TARGET, trusted=False)
    assert err.value.field == "spec.prometheus.queries.cpuUsage"
    assert str(err.value).startswith("spec.prometheus.queries.cpuUsage: ")


def test_trusted_operator_accepts_any_parsable_promql() -> None:
    queries = build_queries({"cpu_usage": 'sum(x{namespace="kube-system"})'}, TARGET, trusted=True)
    assert queries[0].query == 'sum(x{namespace="kube-system"})'
    with pytest.raises(QueryError):  # still must parse
        build_queries({"cpu_usage": "sum("}, TARGET, trusted=True)


def test_scoped_custom_template_is_accepted() -> None:
    t = 'sum(rate(my_cpu_seconds{namespace="{namespace}", deployment="{deployment}"}[{window}]))'
    (q,) = [q for q in build_queries({"cpu_usage": t}, TARGET, trusted=False) if q.key == "cpu_usage"]
    assert q.query == 'sum(rate(my_cpu_seconds{namespace="shop", deployment="web"}[1m]))'


def test_injection_through_values_stays_inside_the_string() -> None:
    """A value with quotes and braces (which the CRD pattern refuses anyway) cannot add a matcher."""
    evil = Target('shop"} or {__name__=~".+', "web", ("app",), "1m")
    query = render('sum(x{namespace="{namespace}"})', evil)
    ast = promql_parser.parse(query)
    assert isinstance(ast, promql_parser.AggregateExpr)
    (matcher,) = ast.expr.matchers.matchers
    assert (matcher.name, matcher.value) == ("namespace", 'shop"} or {__name__=~".+')
    # ...and it is not the policy's namespace "shop", so the scope check refuses nothing it should not:
    with pytest.raises(QueryError):
        check_scope(query, "shop", "f")


@given(st.text(max_size=40))
def test_promql_string_escaping_round_trips(value: str) -> None:
    """Whatever the value, it parses back as exactly that label value."""
    ast = promql_parser.parse(f'x{{l="{promql_string(value)}"}}')
    assert [m.value for m in ast.matchers.matchers if m.name == "l"] == [value]


def test_container_placeholder_is_a_literal_alternation() -> None:
    t = Target("shop", "web", ("app", "side.car"), "30s")
    q = render('x{container=~"{container}"}', t)
    ast = promql_parser.parse(q)
    (m,) = ast.matchers.matchers
    assert m.value == "app|side\\.car"


def test_pod_regex_does_not_match_other_deployments() -> None:
    import re

    from rlscale.operator.queries import pod_regex

    rx = re.compile(pod_regex("web"))
    assert rx.fullmatch("web-7d9f8b6c5-abcde")
    assert not rx.fullmatch("web-api-7d9f8b6c5-abcde")
    assert not rx.fullmatch("webx-7d9f8b6c5-abcde")
