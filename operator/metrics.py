"""The operator's own Prometheus metrics, served on ``/metrics`` by prometheus-client.

One registry per :class:`OperatorMetrics` (not the global default), so tests and the
benchmark can run several operators in one process. Label cardinality is bounded: per
policy only the rollout ratio (one series per policy, removed when the policy goes);
actions are the 63-entry table plus ``baseline:<kind>``; rules are the mask's 12 codes.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OperatorMetrics:
    """Counters, gauges and histograms the handlers update."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "rlscale_decisions", "Decisions made, by who acted and the action.", ["source", "action"], registry=r
        )
        self.actions_applied = Counter(
            "rlscale_actions_applied", "Changes applied to Deployments, by kind.", ["kind"], registry=r
        )
        self.masked = Counter(
            "rlscale_masked_actions", "Actions the safety mask forbade, by rule.", ["rule"], registry=r
        )
        self.refusals = Counter(
            "rlscale_refusals", "Reconciles that did not decide, by reason.", ["reason"], registry=r
        )
        self.rollout_ratio = Gauge(
            "rlscale_rollout_ratio", "Share of decisions the learned policy gets.", ["namespace", "policy"], registry=r
        )
        self.prometheus_latency = Histogram(
            "rlscale_prometheus_query_seconds", "Latency of Prometheus queries.", buckets=_FAST_BUCKETS, registry=r
        )
        self.prometheus_errors = Counter(
            "rlscale_prometheus_query_errors", "Prometheus queries that failed, by error type.", ["error"], registry=r
        )
        self.decision_latency = Histogram(
            "rlscale_decision_seconds", "Time in decide() (inference included).", buckets=_FAST_BUCKETS, registry=r
        )
        self.reconcile_latency = Histogram(
            "rlscale_reconcile_seconds",
            "Whole reconcile: read, decide, actuate, status.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.reconcile_lateness = Histogram(
            "rlscale_reconcile_lateness_seconds",
            "How late a reconcile started after it was due.",
            buckets=(0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0),
            registry=r,
        )
        self.prometheus_requests = Counter(
            "rlscale_prometheus_requests",
            "Prometheus query requests sent: 'batch' (one per namespace and evaluation time, shared by its "
            "policies on the default templates) or 'policy' (one policy's custom templates).",
            ["kind"],
            registry=r,
        )
        self.decision_batch_size = Histogram(
            "rlscale_decision_batch_size",
            "Decisions per decide_batch call.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )
        self.status_writes = Counter(
            "rlscale_status_writes",
            "Status updates after a reconcile: 'written', or 'skipped' (nothing a user sees changed and the "
            "heartbeat is not due).",
            ["outcome"],
            registry=r,
        )
        self.policies = Gauge("rlscale_policies", "Policies this replica is reconciling.", registry=r)

    def forget_policy(self, namespace: str, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.rollout_ratio.remove(namespace, name)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` in a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)
