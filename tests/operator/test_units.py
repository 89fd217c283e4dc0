"""Plain-function tests of the operator's helpers: conflicts, timing, patches, observation, retries, conditions."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes.client.rest import ApiException

from rlscale.operator import conditions as cond
from rlscale.operator.actuate import container_targets, limits_patch
from rlscale.operator.handlers import find_conflicts, next_delay
from rlscale.operator.kube import ApiError, KubeApi, NotFound, TransientApiError, _classify, merge_patch
from rlscale.operator.observe import TargetError, build_observation, deployment_view
from rlscale.policy.limits import ScalingLimits


def _dep(**limits: dict[str, str]) -> dict[str, object]:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {"name": n, "resources": {"limits": lim, "requests": {"cpu": lim.get("cpu", "1")}}}
                        for n, lim in limits.items()
                    ]
                }
            },
        },
        "status": {"readyReplicas": 2},
    }


def test_conflicts_oldest_policy_keeps_the_deployment() -> None:
    policies = [("2026-02-01T00:00:00Z", "new"), ("2026-01-01T00:00:00Z", "old")]
    assert find_conflicts("ns", "old", "web", [], policies).owner_policy is None
    assert find_conflicts("ns", "new", "web", [], policies).owner_policy == "old"
    assert find_conflicts("ns", "old", "web", ["h2", "h1", "h1"], policies).hpas == ("h1", "h2")


def test_next_delay_never_early_after_restart() -> None:
    assert next_delay(15, "2026-01-01T00:00:00Z", 1767225600 + 5) == pytest.approx(10)
    assert next_delay(15, "2026-01-01T00:00:00Z", 1767225600 + 100) == 0
    assert next_delay(15, None, 0, jitter=0.5) == 7.5
    assert next_delay(15, "garbage", 0) == 0


def test_merged_is_json_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "p": 1}, {"a": {"b": 3}, "p": None}) == {"a": {"b": 3, "c": 2}}


def test_container_targets_move_all_by_same_delta_and_keep_requests_below() -> None:
    view = deployment_view(
        _dep(app={"cpu": "1", "memory": "1Gi"}, side={"cpu": "200m", "memory": "128Mi"}), ["app", "side"]
    )
    targets = container_targets(view, 750, 768, ScalingLimits(cpu_limit_min_m=100))
    assert [(t.name, t.cpu_limit_m, t.memory_limit_mib) for t in targets] == [
        ("app", 750, 768),
        ("side", 100, 128),
    ]  # side: 200m-250m and 128Mi-256Mi clamp to the minimums
    assert targets[0].cpu_request_m == 750  # request 1 CPU > new limit 750m: lowered
    patch = limits_patch(targets)
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert containers[0] == {
        "name": "app",
        "resources": {"limits": {"cpu": "750m", "memory": "768Mi"}, "requests": {"cpu": "750m"}},
    }


def test_deployment_view_errors_name_the_problem() -> None:
    with pytest.raises(TargetError) as err:
        deployment_view(_dep(app={"cpu": "1", "memory": "1Gi"}), ["db"])
    assert err.value.reason == "ContainerNotFound" and "'db'" in str(err.value)
    with pytest.raises(TargetError) as err:
        deployment_view(_dep(app={"cpu": "1"}), ["app"])
    assert err.value.reason == "ContainerLimitsMissing" and "memory" in str(err.value)
    with pytest.raises(TargetError) as err:
        deployment_view(_dep(app={"cpu": "lots", "memory": "1Gi"}), ["app"])
    assert err.value.reason == "InvalidQuantity"


def test_observation_unknown_stays_none_and_bad_values_are_dropped() -> None:
    view = deployment_view(_dep(app={"cpu": "500m", "memory": "512Mi"}), ["app"])
    obs, unknown = build_observation(
        1.0,
        view,
        {
            0.0: {
                "cpu_usage": 0.25,
                "error_rate": 1.7,
                "request_rate": float("inf"),
                "latency_p99": -1.0,
                "in_flight": 4,
            }
        },
    )
    assert obs.cpu_utilization == pytest.approx(0.5)
    assert obs.error_rate is None and obs.request_rate is None and obs.latency_p99_ms is None
    assert obs.queue_per_replica == pytest.approx(2.0)  # 4 in flight / 2 ready
    assert not obs.metrics_ok
    assert {"error_rate", "request_rate", "latency_p99_ms", "memory_utilization"} <= set(unknown)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, NotFound), (409, TransientApiError), (429, TransientApiError), (503, TransientApiError), (403, ApiError)],
)
def test_api_errors_are_classified(status: int, kind: type[ApiError]) -> None:
    error = _classify("x", ApiException(status=status, reason="r"))
    assert type(error) is kind and error.status == status


def test_transient_errors_are_retried_then_succeed() -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ApiException(status=429, reason="Too Many Requests")
        return "ok"

    api = KubeApi.__new__(KubeApi)
    api._executor, api._retries, api._backoff_s = ThreadPoolExecutor(1), 3, 0.001
    assert asyncio.run(api._call("x", flaky)) == "ok" and len(attempts) == 3
    attempts.clear()

    def forbidden() -> str:
        attempts.append(1)
        raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiError):
        asyncio.run(api._call("x", forbidden))
    assert len(attempts) == 1  # not retried


def test_condition_transition_time_moves_only_on_status_change() -> None:
    a = cond.make("Ready", True, "Reconciled", "", now=100.0, generation=1)
    b = cond.make("Ready", True, "Reconciled", "again", now=200.0, generation=1)
    c = cond.make("Ready", False, "TargetNotFound", "gone", now=300.0, generation=1)
    (kept,) = cond.merge([a], [b])
    assert kept.last_transition_time == a.last_transition_time and kept.message == "again"
    (moved,) = cond.merge([a], [c])
    assert moved.last_transition_time == cond.rfc3339(300.0)
    long = cond.make("Ready", False, "X", "m" * 5000, now=0, generation=None)
    assert len(long.message) == cond.MAX_MESSAGE


def test_aligned_ticks_are_shared_by_a_namespace_and_never_early() -> None:
    from rlscale.operator.handlers import aligned, phase_of

    phase = phase_of("shop", 15.0)
    assert 0 <= phase < 15 and phase == phase_of("shop", 15.0)
    # Policies of one namespace that become due at different moments tick at the same, bit-identical times.
    starts = [1_767_225_600.0 + x for x in (0.0, 0.3, 7.1, 14.9)]
    firsts = [aligned(t, 15.0, phase) for t in starts]
    assert all(f >= t for f, t in zip(firsts, starts, strict=True))
    assert len({aligned(f + 7.5, 15.0, phase) for f in firsts if f == firsts[0]}) == 1
    assert all((f - phase) % 15.0 == pytest.approx(0.0, abs=1e-6) for f in firsts)
    # The next tick of a tick is one interval later, on the same grid.
    assert aligned(firsts[0] + 7.5, 15.0, phase) == pytest.approx(firsts[0] + 15.0)
    # Namespaces are spread over the interval.
    assert len({round(phase_of(f"ns-{i}", 15.0), 3) for i in range(20)}) > 10
