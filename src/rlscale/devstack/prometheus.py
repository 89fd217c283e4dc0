"""A real Prometheus server on loopback for the e2e tier and the local demo.

The operator reads its signals through PromQL, so the tests run the real query engine
(Debian's ``prometheus`` package) against real scrapes instead of faking the HTTP API.
Each instance has its own free port and tsdb dir, scrapes every second by default and
has ``--web.enable-lifecycle`` so a test can change targets and ``reload()``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .procs import ComponentError, ManagedProcess, free_port, wait_until

__all__ = ["DEFAULT_PROMETHEUS", "LocalPrometheus", "PrometheusNotFoundError", "ensure_prometheus_binary"]

DEFAULT_PROMETHEUS = Path("/usr/bin/prometheus")


class PrometheusNotFoundError(RuntimeError):
    """No prometheus binary: tells how to install one."""


def ensure_prometheus_binary(binary: Path | str | None = None) -> Path:
    """Return a usable prometheus binary (given, /usr/bin/prometheus, or on PATH)."""
    if binary is not None:
        path = Path(binary)
        if path.is_file():
            return path
        raise PrometheusNotFoundError(f"prometheus binary {path} does not exist")
    if DEFAULT_PROMETHEUS.is_file():
        return DEFAULT_PROMETHEUS
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    raise PrometheusNotFoundError(
        "prometheus is not installed: run `apt-get install prometheus` (Debian/Ubuntu; "
        "the server binary is /usr/bin/prometheus) or pass the path of a prometheus binary"
    )


class LocalPrometheus:
    """One Prometheus process with a generated config, on 127.0.0.1:<free port>.

    Give ``static_targets`` (``host:port`` strings scraped as job ``static``) and/or full
    ``scrape_configs`` entries. ``start()`` waits for ``/-/ready``; ``stop()`` is
    idempotent; also a context manager.
    """

    def __init__(
        self,
        work_dir: Path | str,
        *,
        static_targets: Sequence[str] = (),
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        scrape_interval: str = "1s",
        binary: Path | str | None = None,
        start_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> None:
        """Configure (not start); the work dir gets prometheus.yml, tsdb/ and prometheus.log."""
        self.work_dir = Path(work_dir).resolve()
        self.static_targets = list(static_targets)
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.port = 0
        self.config_file = self.work_dir / "prometheus.yml"
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration this instance runs with."""
        scrape = list(self.scrape_configs)
        if self.static_targets:
            scrape.append({"job_name": "static", "static_configs": [{"targets": list(self.static_targets)}]})
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": scrape,
        }

    def start(self, *, keep_data: bool = False) -> LocalPrometheus:
        """Write the config, start the server and wait until it is ready.

        A first start picks a free port; a start after :meth:`stop` listens on the same one
        (clients keep their URL, as with a restarted Prometheus pod behind its Service).
        The tsdb is wiped unless ``keep_data``.
        """
        if self._proc is not None and self._proc.alive():
            return self
        binary = ensure_prometheus_binary(self.binary)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not keep_data:
            shutil.rmtree(self.work_dir / "tsdb", ignore_errors=True)
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        if not self.port:
            self.port = free_port()
        self._proc = ManagedProcess(
            "prometheus",
            [
                str(binary),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.work_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            self.work_dir / "prometheus.log",
            die_with_parent=self.die_with_parent,
        )
        self._proc.start()
        try:
            wait_until(
                self._ready,
                timeout=self.start_timeout,
                what="/-/ready",
                component="prometheus",
                log_path=self._proc.log_path,
                alive=self._proc.alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return resp.status == 200

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``: no clean tsdb shutdown); idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout=0.0 if kill else 10.0)

    def restart(self, *, keep_data: bool = False, down_s: float = 0.0, kill: bool = False) -> float:
        """Stop, stay down ``down_s`` seconds, start on the same port; the seconds until ready again.

        ``keep_data=False`` is a Prometheus that lost its storage (an emptyDir, a new pod):
        every series starts again from nothing, so ``rate()`` windows are empty at first.
        """
        self.stop(kill=kill)
        time.sleep(down_s)
        t0 = time.monotonic()
        self.start(keep_data=keep_data)
        return time.monotonic() - t0

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reload(
        self,
        *,
        static_targets: Sequence[str] | None = None,
        scrape_configs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Rewrite the config with new targets and hot-reload it (POST /-/reload)."""
        if static_targets is not None:
            self.static_targets = list(static_targets)
        if scrape_configs is not None:
            self.scrape_configs = [dict(c) for c in scrape_configs]
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise ComponentError("prometheus", f"reload failed: HTTP {resp.status}", self.config_file)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (vector entries with metric and value)."""
        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise ComponentError("prometheus", f"query {promql!r} failed: {body}")
        result = body["data"]["result"]
        return list(result) if isinstance(result, list) else [result]

    def wait_for_value(self, promql: str, timeout: float = 30.0) -> float:
        """Poll an instant query until it returns a sample; returns the first value."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return float(result[0]["value"][1])
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no sample for {promql!r} after {timeout:.0f}s")
            time.sleep(0.25)
