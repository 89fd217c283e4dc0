"""``rlscale history``: a workload's own request rate, read back from Prometheus, as a trace file.

Fine-tuning a policy for one workload needs that workload's load, and Prometheus already
holds it: the operator reads the request rate every reconcile through the policy's
``requestRate`` template. This command asks the *same* query over the past ``--days``
days and writes it in the project's trace format (``t_seconds,value``, one row per
minute; see :mod:`rlscale.training.workloads`), so the file goes wherever a public trace
goes (``rlscale train --extra-trace FILE``, ``rlscale evaluate --trace FILE``).

Why the policy, not a free-form query: the template, the target it is rendered for and
the tenant check are the operator's own (:func:`rlscale.operator.queries.build_queries`),
so a policy author gets back exactly the series the operator decides on — and no more:
unless ``--trust-custom-queries`` is given, a template that reaches outside the policy's
namespace is refused here as it is in the operator.

Units and alignment: the query's result is requests per second; rows are requests per
*minute* (× 60), like the public HTTP traces. Row ``i`` covers the minute
``[t, t + 60)`` and holds the query evaluated at the minute's end (with ``--step`` below
60, the mean of the evaluations in ``(t, t + 60]``), i.e. the rate over the policy's
``window`` ending there — what the operator would have seen.

What cannot be trusted is refused rather than guessed: less history than asked (unless
``--allow-shorter``), a gap longer than ``--max-gap-minutes`` (shorter ones are filled by
linear interpolation and counted in the provenance), more than one series. The trace
format has no room for comments, so the provenance (Prometheus URL, rendered query, time
range, filled minutes, the CSV's sha256) goes to a JSON file next to it.

Layering: this module sits beside :mod:`rlscale.devstack`, above both the operator (query
rendering, the CRD models) and training (the trace writer); neither imports it. Nothing
here imports torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import requests
import urllib3
import yaml
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from pydantic import ValidationError

from rlscale.operator.errors import describe_validation_error
from rlscale.operator.models import API_GROUP, API_VERSION, KIND, PLURAL, AutoscalePolicySpec
from rlscale.operator.queries import QueryError, RenderedQuery, Target, build_queries
from rlscale.training.workloads import TRACE_STEP_S, write_trace

__all__ = [
    "MAX_POINTS_PER_QUERY",
    "HistoryError",
    "HistoryTrace",
    "fetch_policy",
    "fill_gaps",
    "history_cmd",
    "load_policy_file",
    "parse_policy",
    "read_history",
    "read_range",
    "request_rate_query",
    "to_minutes",
]

#: Prometheus refuses a range query of more than 11,000 points per series; chunks stay below.
MAX_POINTS_PER_QUERY = 10_000
_DAY_S = 86_400
_ROWS_PER_DAY = _DAY_S // TRACE_STEP_S
#: Rates (requests per minute) are rounded to this many decimals: PromQL's float noise
#: (1e-12) would otherwise turn integral rates into 17-digit numbers.
_DECIMALS = 6


class HistoryError(RuntimeError):
    """The trace cannot be written as asked; the message says why and what to change."""


# --- the policy --------------------------------------------------------------------------------------------------


def parse_policy(obj: Mapping[str, Any], namespace: str, name: str | None) -> tuple[str, AutoscalePolicySpec]:
    """``(name, spec)`` of an AutoscalePolicy object, checked to be the one asked for.

    The namespace is the tenant boundary of the rendered query, so an object that says it
    lives elsewhere than ``--namespace`` is refused rather than silently re-homed.
    """
    meta = obj.get("metadata") or {}
    obj_name = meta.get("name")
    if name is not None and obj_name is not None and obj_name != name:
        raise HistoryError(f"the policy is named {obj_name!r}, not {name!r}")
    obj_ns = meta.get("namespace")
    if obj_ns is not None and obj_ns != namespace:
        raise HistoryError(f"the policy is in namespace {obj_ns!r}, not {namespace!r} (--namespace)")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise HistoryError("the policy has no spec")
    try:
        parsed = AutoscalePolicySpec.model_validate(spec)
    except ValidationError as exc:
        raise HistoryError(f"invalid policy: {describe_validation_error(exc)}") from exc
    return str(name or obj_name or "?"), parsed


def load_policy_file(path: Path, namespace: str, name: str | None) -> tuple[str, AutoscalePolicySpec]:
    """The AutoscalePolicy in a YAML file (``kubectl get -o yaml`` output or a manifest).

    A file of several documents is searched for the one AutoscalePolicy (named ``name``
    when given), so a manifest that also holds the Deployment works as it is.
    """
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise HistoryError(f"{path}: cannot read the policy: {exc}") from exc
    found = [
        d
        for d in docs
        if isinstance(d, Mapping)
        and d.get("kind") == KIND
        and (name is None or (d.get("metadata") or {}).get("name") == name)
    ]
    if len(found) != 1:
        which = f"AutoscalePolicy named {name!r}" if name else "AutoscalePolicy"
        raise HistoryError(f"{path}: expected one {which}, found {len(found)}")
    return parse_policy(found[0], namespace, name)


def fetch_policy(namespace: str, name: str, *, context: str | None = None, api_client: Any = None) -> dict[str, Any]:
    """The AutoscalePolicy ``namespace/name`` from the cluster, as JSON.

    A person runs this command, so the kubeconfig (``context``, else the current one) comes
    first and the in-cluster service account second — the operator's order is the reverse.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException

    if api_client is None:
        try:
            k8s_config.load_kube_config(context=context)
        except (k8s_config.ConfigException, OSError) as exc:
            try:
                k8s_config.load_incluster_config()
            except k8s_config.ConfigException:
                raise HistoryError(
                    f"no Kubernetes configuration ({exc}); use --policy-file FILE to read the policy from a file"
                ) from exc
        api_client = k8s.ApiClient()
    api = k8s.CustomObjectsApi(api_client)
    try:
        obj = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise HistoryError(f"AutoscalePolicy {namespace}/{name} not found") from exc
        raise HistoryError(f"reading AutoscalePolicy {namespace}/{name}: HTTP {exc.status} {exc.reason}") from exc
    except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # no connection, TLS, bad answer
        raise HistoryError(f"reading AutoscalePolicy {namespace}/{name}: {exc}") from exc
    if not isinstance(obj, dict):
        raise HistoryError(f"reading AutoscalePolicy {namespace}/{name}: unexpected answer {type(obj).__name__}")
    return obj


def request_rate_query(spec: AutoscalePolicySpec, namespace: str, *, trusted: bool) -> RenderedQuery:
    """The policy's request-rate query, rendered and checked exactly as the operator does.

    Only the ``requestRate`` template is passed: the other signals' templates are not sent,
    so a problem in one of them is not this command's to report.
    """
    template = spec.prometheus.queries.request_rate
    target = Target(namespace, spec.target_ref.name, tuple(spec.containers), spec.prometheus.window)
    try:
        queries = build_queries({"request_rate": template}, target, trusted=trusted)
    except QueryError as exc:
        raise HistoryError(f"refused: {exc}") from exc
    return next(q for q in queries if q.key == "request_rate")


# --- Prometheus --------------------------------------------------------------------------------------------------


def connect(
    url: str, *, bearer_token: str | None = None, ca_file: Path | None = None, timeout_s: float = 60.0
) -> PrometheusConnect:
    """A client for ``url``; the timeout is per request (one chunk of up to 10,000 points)."""
    session = requests.Session()
    if ca_file is not None:
        session.verify = str(ca_file)
    return PrometheusConnect(
        url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {bearer_token}"} if bearer_token else None,
        session=session,
        timeout=timeout_s,  # type: ignore[arg-type]  # the client accepts float seconds
    )


def read_range(
    client: PrometheusConnect,
    query: str,
    first_s: int,
    last_s: int,
    step_s: int,
    *,
    chunk_points: int = MAX_POINTS_PER_QUERY,
) -> list[tuple[int, float]]:
    """``(time, value)`` of ``query`` at ``first_s, first_s + step_s, …, last_s``, in chunks.

    A range query may return at most 11,000 points per series, so the range is split into
    consecutive, non-overlapping chunks of ``chunk_points`` evaluation times. Times with no
    result are simply absent (the caller decides about gaps). More than one series is an
    error: the template must aggregate to one, as the operator requires.
    """
    if (last_s - first_s) % step_s:
        raise ValueError("the range must be a whole number of steps")
    n = (last_s - first_s) // step_s + 1
    out: list[tuple[int, float]] = []
    for lo in range(0, n, chunk_points):
        hi = min(lo + chunk_points, n) - 1
        start = dt.datetime.fromtimestamp(first_s + lo * step_s, dt.UTC)
        end = dt.datetime.fromtimestamp(first_s + hi * step_s, dt.UTC)
        try:
            series = client.custom_query_range(query, start_time=start, end_time=end, step=str(step_s))
        except PrometheusApiClientException as exc:
            raise HistoryError(f"Prometheus refused the query: {_short(exc)}") from exc
        except requests.RequestException as exc:
            raise HistoryError(f"cannot reach Prometheus: {_short(exc)}") from exc
        if len(series) > 1:
            labels = ", ".join(json.dumps(s.get("metric", {}), sort_keys=True) for s in series[:3])
            raise HistoryError(
                f"the request-rate query returned {len(series)} series ({labels}…), expected one: "
                "aggregate it, e.g. sum(...)"
            )
        for s in series:
            for ts, raw in s.get("values", []):
                out.append((round(float(ts)), float(raw)))
    return out


# --- the per-minute rows -----------------------------------------------------------------------------------------


def to_minutes(
    samples: Iterable[tuple[int, float]], start_s: int, n_rows: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Requests per minute for each row (NaN where there is nothing usable).

    Row ``i`` covers ``[start_s + 60 i, start_s + 60 (i + 1))`` and averages the
    evaluations at times in ``(start, end]`` of it: a rate evaluated at ``T`` describes the
    window ending at ``T``. NaN, infinite and negative results are unknown, as in the
    operator, not zero.
    """
    sums = np.zeros(n_rows)
    counts = np.zeros(n_rows)
    for ts, value in samples:
        row = (ts - start_s + TRACE_STEP_S - 1) // TRACE_STEP_S - 1
        if 0 <= row < n_rows and math.isfinite(value) and value >= 0:
            sums[row] += value
            counts[row] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        per_second = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.asarray(per_second * TRACE_STEP_S, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FilledGap:
    """Rows ``[first_row, first_row + rows)`` had no data and were filled."""

    first_row: int
    rows: int


def fill_gaps(
    values: np.ndarray[Any, np.dtype[np.float64]], max_gap_rows: int
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], list[FilledGap]]:
    """Fill runs of NaN of at most ``max_gap_rows``; refuse longer ones.

    Inside the series a run is interpolated linearly between its neighbours (a missed
    scrape or two says nothing about the load, and a straight line invents no peak); at
    either end the nearest value is held. A longer run is a :class:`HistoryError` naming
    where it is: inventing ten minutes of load would train the policy on made-up data.
    The caller checks for a missing *start* first (that is "less history", not a gap).
    """
    out = values.copy()
    known = np.flatnonzero(~np.isnan(out))
    if known.size == 0:
        raise HistoryError("no data at all")
    gaps: list[FilledGap] = []
    isnan = np.isnan(out)
    i = 0
    n = out.size
    while i < n:
        if not isnan[i]:
            i += 1
            continue
        j = i
        while j < n and isnan[j]:
            j += 1
        length = j - i
        if length > max_gap_rows:
            raise _GapTooLong(i, length)
        if i == 0:
            out[i:j] = out[j]
        elif j == n:
            out[i:j] = out[i - 1]
        else:
            left, right = out[i - 1], out[j]
            out[i:j] = left + (right - left) * np.arange(1, length + 1) / (length + 1)
        gaps.append(FilledGap(i, length))
        i = j
    return out, gaps


class _GapTooLong(HistoryError):
    def __init__(self, first_row: int, rows: int) -> None:
        super().__init__(f"a gap of {rows} minutes from row {first_row}")
        self.first_row = first_row
        self.rows = rows


# --- the whole read ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryTrace:
    """The per-minute series and where it came from."""

    values: np.ndarray[Any, np.dtype[np.float64]]
    start_s: int
    end_s: int
    gaps: list[FilledGap] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_history(
    client: PrometheusConnect,
    query: RenderedQuery,
    *,
    end_s: float,
    days: float,
    step_s: int = TRACE_STEP_S,
    max_gap_minutes: int = 5,
    allow_shorter: bool = False,
    chunk_points: int = MAX_POINTS_PER_QUERY,
) -> HistoryTrace:
    """Read ``days`` days of ``query`` ending at ``end_s`` (rounded down to the minute) as per-minute rows.

    Less history than asked — the first row with data more than ``max_gap_minutes`` after
    the start — is an error naming how many days there are, unless ``allow_shorter``, when
    the trace starts at the first data instead.
    """
    if TRACE_STEP_S % step_s:
        raise HistoryError(f"--step must divide {TRACE_STEP_S} (the trace has one row per minute), got {step_s}")
    n_rows = round(days * _ROWS_PER_DAY)
    if n_rows < 2:
        raise HistoryError(f"--days {days:g} is less than two minutes")
    end = int(end_s // TRACE_STEP_S) * TRACE_STEP_S
    start = end - n_rows * TRACE_STEP_S
    samples = read_range(client, query.query, start + step_s, end, step_s, chunk_points=chunk_points)
    rows = to_minutes(samples, start, n_rows)
    known = np.flatnonzero(~np.isnan(rows))
    if known.size == 0:
        raise HistoryError(
            f"Prometheus has no data for the request-rate query between {_iso(start)} and {_iso(end)}: {query.query}"
        )
    first = int(known[0])
    if first > max_gap_minutes:
        available = (n_rows - first) / _ROWS_PER_DAY
        shown = math.floor(available * 10) / 10
        if not allow_shorter:
            raise HistoryError(
                f"Prometheus holds only {shown:.1f} days of this workload's request rate "
                f"(the first data is at {_iso(start + first * TRACE_STEP_S)}), not the {days:g} days asked for; "
                f"use --days {shown:g} or less, or --allow-shorter to write the {available:.2f} days there are"
            )
        rows = rows[first:]
        start += first * TRACE_STEP_S
    if rows.size < 2:
        raise HistoryError("Prometheus holds less than two minutes of this workload's request rate")
    try:
        filled, gaps = fill_gaps(rows, max_gap_minutes)
    except _GapTooLong as exc:
        gap_start = start + exc.first_row * TRACE_STEP_S
        raise HistoryError(
            f"the request rate has no data for {exc.rows} minutes, from {_iso(gap_start)} to "
            f"{_iso(gap_start + exc.rows * TRACE_STEP_S)} (at most {max_gap_minutes} are filled in); "
            "raise --max-gap-minutes to interpolate across it, or choose --days to start after it"
        ) from None
    filled = np.round(filled, _DECIMALS)
    provenance: dict[str, Any] = {
        "source": "prometheus",
        "query": query.query,
        "query_field": query.field,
        "unit": "requests per minute (the query's requests per second × 60)",
        "start_unix_s": start,
        "end_unix_s": end,
        "start": _iso(start),
        "end": _iso(end),
        "rows": int(filled.size),
        "days_asked": days,
        "step_s": step_s,
        "filled_minutes": int(sum(g.rows for g in gaps)),
        "filled_gaps": [
            {"from": _iso(start + g.first_row * TRACE_STEP_S), "minutes": g.rows, "first_row": g.first_row}
            for g in gaps
        ],
    }
    return HistoryTrace(filled, start, end, gaps, provenance)


def provenance_path(out: Path) -> Path:
    """``trace.csv`` → ``trace.provenance.json``: the trace format has no comment lines."""
    return out.with_name(f"{out.stem if out.suffix else out.name}.provenance.json")


def _redact(url: str) -> str:
    """The URL without user:password, for the provenance file."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + "…"


def _parse_end(value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither unix seconds nor an ISO 8601 time", param_hint="--end"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


# --- the command -------------------------------------------------------------------------------------------------


@click.command("history")
@click.option("--namespace", "-n", required=True, help="The policy's namespace (every query is pinned to it).")
@click.option("--policy", "policy_name", default=None, help="The AutoscalePolicy's name (read from the cluster).")
@click.option(
    "--policy-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the AutoscalePolicy from this YAML file instead of the cluster.",
)
@click.option("--context", default=None, help="kubeconfig context (default: the current one).")
@click.option(
    "--prometheus",
    "prometheus_url",
    default=None,
    help="Prometheus base URL (default: the policy's spec.prometheus.url).",
)
@click.option(
    "--bearer-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding a bearer token for Prometheus.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM CA bundle to verify an https Prometheus.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=14.0,
    show_default=True,
    help="How much history, ending at --end.",
)
@click.option(
    "--step",
    "step_s",
    type=click.IntRange(1, TRACE_STEP_S),
    default=TRACE_STEP_S,
    show_default=True,
    help="Seconds between evaluations; must divide 60 (a row is the mean of its minute's evaluations).",
)
@click.option("--end", default=None, help="End of the trace, unix seconds or ISO 8601 (default: now).")
@click.option(
    "--max-gap-minutes",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Longest run of missing minutes filled by interpolation; a longer one is an error.",
)
@click.option("--allow-shorter", is_flag=True, help="Accept less history than --days (the trace starts at the data).")
@click.option(
    "--trust-custom-queries",
    is_flag=True,
    help="Accept a template that is not pinned to the namespace (as the operator's flag of that name).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds per Prometheus request (one request per 10,000 evaluations).",
)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Trace file.")
def history_cmd(
    namespace: str,
    policy_name: str | None,
    policy_file: Path | None,
    context: str | None,
    prometheus_url: str | None,
    bearer_token_file: Path | None,
    ca_file: Path | None,
    days: float,
    step_s: int,
    end: str | None,
    max_gap_minutes: int,
    allow_shorter: bool,
    trust_custom_queries: bool,
    timeout_s: float,
    out: Path,
) -> None:
    """Write a workload's request-rate history from Prometheus as a trace file (t_seconds,value) for fine-tuning.

    The query is the AutoscalePolicy's requestRate template (or the default), rendered and
    namespace-checked as the operator does; rows are requests per minute. The provenance
    goes to <out stem>.provenance.json.
    """
    if policy_file is None and policy_name is None:
        raise click.UsageError("give --policy NAME (read from the cluster) or --policy-file FILE")
    end_s = _parse_end(end)
    try:
        if policy_file is not None:
            name, spec = load_policy_file(policy_file, namespace, policy_name)
        else:
            assert policy_name is not None
            name, spec = parse_policy(fetch_policy(namespace, policy_name, context=context), namespace, policy_name)
        query = request_rate_query(spec, namespace, trusted=trust_custom_queries)
        url = prometheus_url or spec.prometheus.url
        if not url:
            raise click.UsageError("give --prometheus URL (the policy sets no spec.prometheus.url)")
        token = bearer_token_file.read_text().strip() if bearer_token_file is not None else None
        client = connect(url, bearer_token=token, ca_file=ca_file, timeout_s=timeout_s)
        trace = read_history(
            client,
            query,
            end_s=end_s,
            days=days,
            step_s=step_s,
            max_gap_minutes=max_gap_minutes,
            allow_shorter=allow_shorter,
        )
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    write_trace(out, trace.values)
    from rlscale import __version__

    provenance = {
        **trace.provenance,
        "prometheus": _redact(url),
        "namespace": namespace,
        "policy": name,
        "policy_file": str(policy_file) if policy_file is not None else None,
        "custom_template": spec.prometheus.queries.request_rate is not None,
        "trusted": trust_custom_queries,
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "written_at": _iso(time.time()),
        "rlscale_version": __version__,
    }
    side = provenance_path(out)
    side.write_text(json.dumps(provenance, indent=1) + "\n")
    filled = trace.provenance["filled_minutes"]
    click.echo(
        f"wrote {out}: {trace.values.size} rows ({trace.values.size / _ROWS_PER_DAY:.2f} days, "
        f"{_iso(trace.start_s)} to {_iso(trace.end_s)}), {filled} missing minute(s) filled; provenance in {side}"
    )
