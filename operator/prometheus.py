"""Reaching a policy's Prometheus and reading its signals: one combined query per evaluation time.

Which Prometheus a policy may use and with which credentials is resolved here too
(:func:`endpoint_url`, :func:`resolve_endpoint`): the URL from the spec or the operator's
default, checked against the admin's allowlist, and the bearer token, basic-auth pair and
CA bundle read from Secrets in the policy's own namespace. A credential that cannot be read
is a :class:`SecretError` naming the spec field, so the policy's condition says what to fix.

``prometheus-api-client`` is synchronous (requests), so every query runs in a thread
executor and the event loop keeps serving the other policies. Each request has an explicit
timeout and at most one quick retry: a decision is due again in ``intervalSeconds`` and a
late answer is worth less than a prompt "unknown".

What comes back is turned into a value or ``None`` per signal — never 0 for "unknown":
no series, more than one series, NaN, ±Inf, a negative value and a sample older than
``maxSampleAgeSeconds`` are all ``None``, each with the reason in ``problems`` (shown in
the MetricsAvailable condition). policy/'s mask turns unknown core metrics into "no
scale-down".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from rlscale.operator.models import PrometheusAuthSpec
from rlscale.operator.queries import SIGNAL_LABEL, RenderedQuery, combined_query

#: Reads a Secret as JSON: (namespace, name) → the object, or ``None`` when there is none.
GetSecret = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class SecretError(ValueError):
    """A credential the spec names cannot be read."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach one Prometheus: the key its client is cached under."""

    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False

    def cache_key(self) -> str:
        parts = [
            self.url,
            self.bearer_token or "",
            repr(self.basic_auth),
            self.ca_pem or "",
            str(self.insecure_skip_verify),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def endpoint_url(url: str | None, default: str | None, allowlist: Sequence[str]) -> str:
    """The policy's Prometheus URL (``url``, else the operator's ``default``); ``ValueError`` if unset or not allowed.

    The allowlist is the cluster admin's: without it a policy author could point the
    operator, and the credentials it reads for them, at any URL the operator can reach.
    """
    url = url or default
    if not url:
        raise ValueError("spec.prometheus.url: not set, and the operator was started without --prometheus-url")
    if allowlist and not any(url.startswith(prefix) for prefix in allowlist):
        raise ValueError(
            f"spec.prometheus.url: {url} is not allowed by the operator's Prometheus URL allowlist "
            f"({', '.join(allowlist)})"
        )
    return url


async def resolve_endpoint(namespace: str, url: str, auth: PrometheusAuthSpec, get_secret: GetSecret) -> Endpoint:
    """The :class:`Endpoint` for ``url`` with the credentials ``auth`` names, read from Secrets in ``namespace``.

    Raises :class:`SecretError` for a Secret or key that is missing or not text; errors of
    ``get_secret`` itself (the API) pass through.
    """
    token = basic = ca = None
    if auth.bearer_token_secret_ref is not None:
        ref = auth.bearer_token_secret_ref
        token = await _secret_value(get_secret, namespace, ref.name, ref.key, "bearerTokenSecretRef")
    if auth.basic_auth is not None:
        b = auth.basic_auth
        basic = (
            await _secret_value(get_secret, namespace, b.secret_name, b.username_key, "basicAuth"),
            await _secret_value(get_secret, namespace, b.secret_name, b.password_key, "basicAuth"),
        )
    if auth.ca_secret_ref is not None:
        ref = auth.ca_secret_ref
        ca = await _secret_value(get_secret, namespace, ref.name, ref.key, "caSecretRef")
    return Endpoint(
        url=url,
        bearer_token=token.strip() if token else None,
        basic_auth=basic,
        ca_pem=ca,
        insecure_skip_verify=auth.insecure_skip_verify,
    )


async def _secret_value(get_secret: GetSecret, namespace: str, name: str, key: str, field_name: str) -> str:
    secret = await get_secret(namespace, name)
    where = f"spec.prometheus.auth.{field_name}"
    if secret is None:
        raise SecretError(f"{where}: Secret {namespace}/{name} not found")
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        raise SecretError(f"{where}: Secret {namespace}/{name} has no key {key!r}")
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise SecretError(f"{where}: Secret {namespace}/{name} key {key!r} is not UTF-8 text") from exc


@dataclass(frozen=True, slots=True)
class SignalValues:
    """One evaluation of a policy's signals: value or ``None`` per key, and why each ``None``."""

    values: Mapping[str, float | None]
    problems: Mapping[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    error: str | None = None  # set when Prometheus could not be asked at all

    def get(self, key: str) -> float | None:
        return self.values.get(key)


def parse_rfc3339(value: str) -> float:
    """Unix time of an RFC 3339 timestamp as Prometheus writes it (nanoseconds, ``Z`` or an offset)."""
    m = re.fullmatch(r"(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    base, frac, zone = m.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def duration_s(value: str) -> float:
    """Seconds of a PromQL duration as the CRD allows it (``500ms``, ``30s``, ``2m``, ``1h``)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", value)
    if m is None:
        raise ValueError(f"not a duration: {value!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


class PrometheusReader:
    """Cached ``PrometheusConnect`` clients per endpoint, and the signal parsing.

    ``observe_latency``/``observe_error`` are hooks for the operator's own metrics.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        observe_latency: Any = None,
        observe_error: Any = None,
    ) -> None:
        self._executor = executor
        self._clients: dict[str, PrometheusConnect] = {}
        self._ca_files: dict[str, str] = {}
        self._started: dict[str, tuple[float, float | None]] = {}  # endpoint → (checked at, start time)
        self._observe_latency = observe_latency
        self._observe_error = observe_error

    def _client(self, endpoint: Endpoint, timeout_s: float) -> PrometheusConnect:
        key = endpoint.cache_key()
        client = self._clients.get(key)
        if client is None:
            headers = {"Authorization": f"Bearer {endpoint.bearer_token}"} if endpoint.bearer_token else None
            session = requests.Session()
            if endpoint.insecure_skip_verify:
                session.verify = False
            elif endpoint.ca_pem:
                session.verify = self._ca_file(endpoint.ca_pem)
            client = PrometheusConnect(
                url=endpoint.url.rstrip("/"),
                headers=headers,
                auth=endpoint.basic_auth,
                session=session,
                # One quick retry on connection errors and 5xx; a decision is due again soon anyway.
                retry=Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504), allowed_methods=None),
                timeout=timeout_s,  # type: ignore[arg-type]  # the client accepts float seconds
            )
            self._clients[key] = client
        return client

    def _ca_file(self, pem: str) -> str:
        # requests verifies against a file path; keep one file per distinct CA bundle.
        digest = hashlib.sha256(pem.encode()).hexdigest()
        path = self._ca_files.get(digest)
        if path is None:
            fd = tempfile.NamedTemporaryFile("w", prefix="rlscale-ca-", suffix=".pem", delete=False)  # noqa: SIM115
            with fd:
                fd.write(pem)
            path = self._ca_files[digest] = fd.name
        return path

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for path in self._ca_files.values():
            Path(path).unlink(missing_ok=True)
        self._ca_files.clear()

    async def started_at(self, endpoint: Endpoint, *, timeout_s: float, max_age_s: float = 1.0) -> float | None:
        """When this Prometheus (re)started, as unix time (``/api/v1/status/runtimeinfo``), cached ``max_age_s``.

        Why: after a restart, and after it lost its data, a ``rate()`` window reaches back past
        the first sample, and ``rate()`` extrapolates only half a scrape interval beyond the data,
        so for one window every rate reads low in proportion to the missing part — an idle-looking
        service that a decision would scale down. ``None`` when Prometheus cannot say (an error,
        a server without the endpoint): then nothing is held back. A failed read forgets the
        cached time, so the first answer after an outage is checked afresh.
        """
        key = endpoint.cache_key()
        now = time.monotonic()
        cached = self._started.get(key)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        client = self._client(endpoint, timeout_s)

        def fetch() -> float | None:
            resp = client._session.get(
                f"{client.url}/api/v1/status/runtimeinfo", headers=client.headers, auth=client.auth, timeout=timeout_s
            )
            if resp.status_code != 200:
                return None
            return parse_rfc3339(str(resp.json()["data"]["startTime"]))

        try:
            started = await asyncio.get_running_loop().run_in_executor(self._executor, fetch)
        except Exception:  # unreachable or unexpected: the reads themselves will say what is wrong
            return None
        self._started[key] = (now, started)
        return started

    async def read(
        self,
        endpoint: Endpoint,
        queries: tuple[RenderedQuery, ...],
        *,
        at: float,
        timeout_s: float,
        max_sample_age_s: float,
    ) -> SignalValues:
        """Evaluate ``queries`` at unix time ``at``; never raises for Prometheus trouble."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            result = await loop.run_in_executor(
                self._executor, self._query_blocking, endpoint, queries, at, timeout_s, max_sample_age_s
            )
        except Exception as exc:  # connection refused, timeout, TLS, bad JSON: all mean "unknown"
            self._started.pop(endpoint.cache_key(), None)
            message = describe(exc)
            if self._observe_error is not None:
                self._observe_error(type(exc).__name__)
            return SignalValues(
                values={q.key: None for q in queries},
                problems={q.key: message for q in queries},
                latency_s=time.perf_counter() - start,
                error=message,
            )
        latency = time.perf_counter() - start
        if self._observe_latency is not None:
            self._observe_latency(latency)
        return SignalValues(values=result[0], problems=result[1], latency_s=latency)

    async def series(self, endpoint: Endpoint, query: str, *, at: float, timeout_s: float) -> list[Any]:
        """One instant query's raw series (``[{"metric": …, "value": [ts, "v"]}, …]``); raises on any trouble.

        For :mod:`~rlscale.operator.batchread`, which parses a namespace's batch itself and
        decides what a failure means for each policy in it.
        """
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            result: list[Any] = await loop.run_in_executor(
                self._executor,
                lambda: self._client(endpoint, timeout_s).custom_query(query, params={"time": f"{at:.3f}"}),
            )
        except Exception as exc:
            self._started.pop(endpoint.cache_key(), None)
            if self._observe_error is not None:
                self._observe_error(type(exc).__name__)
            raise
        if self._observe_latency is not None:
            self._observe_latency(time.perf_counter() - start)
        return result

    def _query_blocking(
        self,
        endpoint: Endpoint,
        queries: tuple[RenderedQuery, ...],
        at: float,
        timeout_s: float,
        max_sample_age_s: float,
    ) -> tuple[dict[str, float | None], dict[str, str]]:
        client = self._client(endpoint, timeout_s)
        params = {"time": f"{at:.3f}"}
        try:
            series = client.custom_query(combined_query(queries), params=params)
            by_key: dict[str, list[Any]] = {q.key: [] for q in queries}
            for s in series:
                by_key.setdefault(s.get("metric", {}).get(SIGNAL_LABEL, ""), []).append(s)
        except PrometheusApiClientException:
            # Prometheus refused the combined query (one template returns a scalar, say):
            # ask per signal so that only the bad one is unknown, and say which.
            by_key = {}
            problems_direct: dict[str, str] = {}
            for q in queries:
                try:
                    by_key[q.key] = client.custom_query(q.query, params=params)
                except PrometheusApiClientException as exc:
                    by_key[q.key] = []
                    problems_direct[q.key] = f"{q.field}: Prometheus refused the query: {describe(exc)}"
            values, problems = _parse(by_key, queries, at, max_sample_age_s)
            problems.update(problems_direct)
            return values, problems
        return _parse(by_key, queries, at, max_sample_age_s)


def _parse(
    by_key: Mapping[str, list[Any]], queries: tuple[RenderedQuery, ...], at: float, max_sample_age_s: float
) -> tuple[dict[str, float | None], dict[str, str]]:
    values: dict[str, float | None] = {}
    problems: dict[str, str] = {}
    for q in queries:
        series = by_key.get(q.key, [])
        value, problem = one_value(series, at, max_sample_age_s)
        values[q.key] = value
        if problem:
            problems[q.key] = f"{q.field}: {problem}"
    return values, problems


def one_value(series: list[Any], at: float, max_sample_age_s: float) -> tuple[float | None, str | None]:
    if not series:
        return None, "no data"
    if len(series) > 1:
        return None, f"returned {len(series)} series, expected one (aggregate it, e.g. sum(...))"
    try:
        ts_raw, raw = series[0]["value"]
        ts, value = float(ts_raw), float(raw)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"unreadable sample: {exc}"
    if math.isnan(value):
        return None, "NaN"
    if math.isinf(value):
        return None, "infinite"
    if value < 0:
        return None, f"negative value {value:g}"
    if ts < at - max_sample_age_s:
        return None, f"stale: sample is {at - ts:.0f}s old"
    return value, None


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"
