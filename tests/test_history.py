"""``rlscale history`` against a real Prometheus holding days of backfilled history.

Nothing is mocked on the Prometheus side: the test writes OpenMetrics text with
timestamps (three days of counters sampled every 30 s), turns it into TSDB blocks with
``promtool tsdb create-blocks-from openmetrics`` and starts Debian's ``prometheus`` on
that data directory. The counters grow by a known amount each minute, so ``rate()`` over
the policy's 1m window gives back exactly the per-minute rates the test chose, and the
CSV must round-trip through :func:`rlscale.training.workloads.load_trace` with them.

Namespaces: ``shop`` is the workload (two pods of Deployment ``web`` plus a ``db`` pod
whose huge rate must not leak in through the pod regex); ``other`` is another tenant
with a different rate (a query that reached it would read the wrong numbers); ``gappy``
has a 3-minute hole (filled) and a 20-minute one (refused).

Needs ``prometheus`` and ``promtool`` (Debian: ``apt-get install -y prometheus``, which
``scripts/setup.sh`` does); skipped with that instruction when either is absent.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result
from kubernetes import client as k8s

from rlscale.cli import main
from rlscale.devstack.procs import ManagedProcess, free_port, wait_until
from rlscale.devstack.prometheus import PrometheusNotFoundError, ensure_prometheus_binary
from rlscale.history import HistoryError, connect, fetch_policy, read_range, request_rate_query
from rlscale.operator.models import AutoscalePolicySpec
from rlscale.training.workloads import load_trace

DAYS = 3
SAMPLE_S = 30
#: The data ends ten minutes before the test starts; every command gets ``--end END``.
END = int(time.time()) // 60 * 60 - 600
START = END - DAYS * 86_400
MINUTES = DAYS * 1440
SHOP_PODS = ("web-5d8c7b9f4-aaaaa", "web-5d8c7b9f4-bbbbb")
OTHER_RATE = 9000  # requests per minute, namespace "other"
DB_RATE = 50_000  # requests per minute, pod db-… in "shop" (another Deployment)
#: "gappy": no samples in (start, start + 180 s] of these minutes (rows counted from START).
SHORT_GAP_ROW = MINUTES - 720  # half a day before the end
LONG_GAP_ROW = MINUTES - 2 * 1440  # two days before the end
SHORT_GAP_S, LONG_GAP_S = 180, 1200


def shop_rate(k: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Requests per minute of Deployment ``web`` in minute ``k``: a daily cycle with jitter, integers."""
    return np.round(300 + 200 * np.sin(2 * np.pi * k / 1440) + 37 * ((k * 7919) % 13)).astype(np.int64)


def gappy_rate(k: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return (100 + (k % 50) * 4).astype(np.int64)


SHOP = shop_rate(np.arange(MINUTES))
GAPPY = gappy_rate(np.arange(MINUTES))


def _series(labels: str, per_minute: np.ndarray[Any, Any], skip: Callable[[int], bool] = lambda t: False) -> list[str]:
    """A counter sampled every 30 s from START to END growing by ``per_minute[k] / 2`` per sample of minute k.

    Sample ``j`` (at ``START + 30 j``, j ≥ 1) carries half of minute ``(j - 1) // 2``'s
    requests, so ``rate(...[1m])`` at a minute's end is exactly that minute's rate.
    """
    lines, value = [], 1000.0  # a counter that did not start at 0
    for j in range(MINUTES * 2 + 1):
        t = START + j * SAMPLE_S
        if j > 0:
            value += per_minute[(j - 1) // 2] / 2
        if not skip(t):
            lines.append(f"http_requests_total{{{labels}}} {value} {t}")
    return lines


def _openmetrics() -> str:
    half = SHOP / len(SHOP_PODS)
    lines = ["# HELP http_requests requests served", "# TYPE http_requests counter"]
    for pod in SHOP_PODS:
        lines += _series(f'namespace="shop",pod="{pod}",code="200"', half)
    lines += _series('namespace="shop",pod="db-7f9c8d6b5-qqqqq",code="200"', np.full(MINUTES, DB_RATE))
    lines += _series('namespace="other",pod="web-5d8c7b9f4-zzzzz",code="200"', np.full(MINUTES, OTHER_RATE))
    short = START + SHORT_GAP_ROW * 60
    long = START + LONG_GAP_ROW * 60
    lines += _series(
        'namespace="gappy",pod="web-5d8c7b9f4-ggggg",code="200"',
        GAPPY,
        lambda t: short < t <= short + SHORT_GAP_S or long < t <= long + LONG_GAP_S,
    )
    # OpenMetrics wants a family's samples grouped by series and in time order: they are.
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus on loopback serving the backfilled history; yields its URL."""
    try:
        binary = ensure_prometheus_binary()
    except PrometheusNotFoundError as exc:
        pytest.skip(str(exc))
    promtool = shutil.which("promtool") or shutil.which("promtool", path=str(binary.parent))
    if promtool is None:
        pytest.skip("promtool is not installed: run `apt-get install prometheus` (it ships promtool)")
    work = tmp_path_factory.mktemp("history-prom")
    data = work / "tsdb"
    (work / "history.om").write_text(_openmetrics())
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(work / "history.om"), str(data)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    port = free_port()
    proc = ManagedProcess(
        "prometheus",
        [
            str(binary),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",  # the default 15d would keep it too; say so explicitly
            "--log.level=warn",
        ],
        work / "prometheus.log",
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    try:
        wait_until(
            ready, timeout=120, what="/-/ready", component="prometheus", log_path=proc.log_path, alive=proc.alive
        )
        yield url
    finally:
        proc.stop()


def _policy_file(tmp_path: Path, namespace: str = "shop", request_rate: str | None = None, **meta: Any) -> Path:
    spec: dict[str, Any] = {"targetRef": {"name": "web"}, "containers": ["app"]}
    if request_rate is not None:
        spec["prometheus"] = {"queries": {"requestRate": request_rate}}
    doc = {
        "apiVersion": "rlscale.io/v1alpha1",
        "kind": "AutoscalePolicy",
        "metadata": {"name": "web", "namespace": namespace, **meta},
        "spec": spec,
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    path = tmp_path / f"policy-{namespace}.yaml"
    path.write_text(yaml.safe_dump_all([deployment, doc]))  # a manifest with more than the policy
    return path


def _history(*args: str) -> Result:
    return CliRunner().invoke(main, ["history", "--end", str(END), *args], catch_exceptions=False)


@pytest.mark.slow
def test_history_round_trips_through_load_trace(prometheus: str, tmp_path: Path) -> None:
    out = tmp_path / "trace.csv"
    policy = _policy_file(tmp_path)
    result = _history(
        "--prometheus", prometheus, "-n", "shop", "--policy-file", str(policy), "--days", "3", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    trace = load_trace(out)
    assert len(trace) == MINUTES
    # Exactly the chosen per-minute rates: no db pod, no other namespace, no smoothing or shift.
    np.testing.assert_array_equal(trace.values, SHOP.astype(np.float64))
    prov = json.loads((tmp_path / "trace.provenance.json").read_text())
    assert prov["start_unix_s"] == START and prov["end_unix_s"] == END and prov["rows"] == MINUTES
    assert prov["filled_minutes"] == 0 and prov["namespace"] == "shop" and prov["policy"] == "web"
    assert 'namespace="shop"' in prov["query"] and prov["trusted"] is False
    assert prov["sha256"] == trace.sha256
    assert "wrote" in result.output and "4320 rows" in result.output


@pytest.mark.slow
def test_more_days_than_stored_is_a_clear_error(prometheus: str, tmp_path: Path) -> None:
    out = tmp_path / "trace.csv"
    policy = str(_policy_file(tmp_path))
    result = _history(
        "--prometheus", prometheus, "-n", "shop", "--policy-file", policy, "--days", "5", "--out", str(out)
    )
    assert result.exit_code == 1
    assert "holds only 3.0 days" in result.output and "not the 5 days" in result.output, result.output
    assert "--allow-shorter" in result.output
    assert not out.exists()
    # --allow-shorter: the 3 days there are, and nothing invented before them.
    result = _history(
        "--prometheus", prometheus, "-n", "shop", "--policy-file", policy, "--days", "5", "--allow-shorter",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(load_trace(out).values, SHOP.astype(np.float64))
    assert json.loads((tmp_path / "trace.provenance.json").read_text())["start_unix_s"] == START


@pytest.mark.slow
def test_short_gaps_are_interpolated_and_long_ones_refused(prometheus: str, tmp_path: Path) -> None:
    out = tmp_path / "gappy.csv"
    policy = str(_policy_file(tmp_path, "gappy"))
    result = _history(
        "--prometheus", prometheus, "-n", "gappy", "--policy-file", policy, "--days", "1", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    values = load_trace(out).values
    expected = GAPPY[-1440:].astype(np.float64)
    g = SHORT_GAP_ROW - (MINUTES - 1440)  # the 3 missing minutes, as rows of this one-day trace
    left, right = expected[g - 1], expected[g + 3]
    expected[g : g + 3] = np.round(left + (right - left) * np.arange(1, 4) / 4, 6)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
    prov = json.loads((tmp_path / "gappy.provenance.json").read_text())
    assert prov["filled_minutes"] == 3 and prov["filled_gaps"][0]["first_row"] == g

    result = _history(
        "--prometheus", prometheus, "-n", "gappy", "--policy-file", policy, "--days", "3", "--out", str(out)
    )
    assert result.exit_code == 1
    assert "no data for 20 minutes" in result.output and "--max-gap-minutes" in result.output, result.output
    result = _history(
        "--prometheus", prometheus, "-n", "gappy", "--policy-file", policy, "--days", "3", "--max-gap-minutes", "20",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(load_trace(out)) == MINUTES


@pytest.mark.slow
def test_sub_minute_steps_are_chunked_under_the_11000_point_limit(prometheus: str, tmp_path: Path) -> None:
    # 3 days at 15 s is 17,280 evaluations: one query would be refused by Prometheus.
    out = tmp_path / "fine.csv"
    policy = str(_policy_file(tmp_path))
    args = ("--prometheus", prometheus, "-n", "shop", "--policy-file", policy, "--days", "3", "--step", "15")
    result = _history(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    values = load_trace(out).values
    assert len(values) == MINUTES
    # Rows average the minute's four evaluations, each a 1m rate reaching into the previous minute;
    # the total volume is the same.
    assert math.isclose(values.sum(), SHOP.sum(), rel_tol=0.01)

    spec = AutoscalePolicySpec.model_validate({"targetRef": {"name": "web"}, "containers": ["app"]})
    query = request_rate_query(spec, "shop", trusted=False).query
    client = connect(prometheus)
    whole = read_range(client, query, END - 4000 * 60, END, 60)
    assert read_range(client, query, END - 4000 * 60, END, 60, chunk_points=997) == whole
    assert len(whole) == 4001


@pytest.mark.slow
def test_trusted_flag_lets_a_template_read_another_namespace(prometheus: str, tmp_path: Path) -> None:
    out = tmp_path / "other.csv"
    policy = str(_policy_file(tmp_path, request_rate='sum(rate(http_requests_total{namespace="other"}[{window}]))'))
    result = _history(
        "--prometheus", prometheus, "-n", "shop", "--policy-file", policy, "--days", "1", "--trust-custom-queries",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(load_trace(out).values) == {float(OTHER_RATE)}


def test_a_template_reaching_another_namespace_is_refused(tmp_path: Path) -> None:
    """The operator's tenant check, before any query is sent (the URL is a closed port)."""
    policy = _policy_file(tmp_path, request_rate='sum(rate(http_requests_total{namespace="other"}[{window}]))')
    out = tmp_path / "t.csv"
    result = _history(
        "--prometheus", f"http://127.0.0.1:{free_port()}", "-n", "shop", "--policy-file", str(policy), "--out", str(out)
    )
    assert result.exit_code == 1
    assert "refused: spec.prometheus.queries.requestRate" in result.output
    assert 'namespace="shop"' in result.output and "--trust-custom-queries" in result.output
    assert not out.exists()


def test_the_policy_must_be_the_one_asked_for(tmp_path: Path) -> None:
    policy = str(_policy_file(tmp_path, "shop"))
    base = ("--prometheus", "http://127.0.0.1:1", "--policy-file", policy, "--out", str(tmp_path / "t.csv"))
    result = _history("-n", "other", *base)
    assert result.exit_code == 1 and "in namespace 'shop', not 'other'" in result.output
    result = _history("-n", "shop", "--policy", "api", *base)
    assert result.exit_code == 1 and "expected one AutoscalePolicy named 'api', found 0" in result.output
    result = _history("-n", "shop", "--step", "7", *base)
    assert result.exit_code == 1 and "--step must divide 60" in result.output
    result = CliRunner().invoke(main, ["history", "-n", "shop", "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 2 and "--policy NAME" in result.output


def test_history_is_listed_in_rlscale_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "history" in result.output
    result = CliRunner().invoke(main, ["history", "--help"])
    for option in ("--prometheus", "--namespace", "--policy", "--policy-file", "--days", "--step", "--allow-shorter"):
        assert option in result.output


@pytest.mark.asyncio
async def test_the_policy_is_read_from_the_cluster() -> None:
    """``--policy NAME`` without a file: a GET of the AutoscalePolicy (kmock's API emulator)."""
    spec = {"targetRef": {"name": "web"}, "containers": ["app"]}
    async with kmock.KubernetesEmulator() as emu, kmock.Server(emu):
        emu.resources["rlscale.io/v1alpha1/autoscalepolicies"] = kmock.ResourceInfo(
            kind="AutoscalePolicy", singular="autoscalepolicy", namespaced=True, verbs={"get"}
        )
        emu.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "web"] = {
            "apiVersion": "rlscale.io/v1alpha1",
            "kind": "AutoscalePolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }
        cfg = k8s.Configuration()
        cfg.host = str(emu.url).rstrip("/")
        api = k8s.ApiClient(cfg)
        got = await asyncio.to_thread(fetch_policy, "shop", "web", api_client=api)
        assert got["spec"] == spec
        with pytest.raises(HistoryError, match="AutoscalePolicy shop/nope not found"):
            await asyncio.to_thread(fetch_policy, "shop", "nope", api_client=api)
