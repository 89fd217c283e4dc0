"""``rlscale run``: start the operator (Kopf) with rlscale's flags.

Every flag also reads an ``RLSCALE_*`` environment variable (click's ``envvar``), so the
Helm chart can set them either way. Kopf's own essentials — which namespaces to watch,
peering, the liveness endpoint — are passed straight to :func:`kopf.run`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import click
import kopf

#: glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def return_freed_memory_promptly(threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap and trim thresholds so memory freed after a burst goes back to the OS.

    When Kopf first adopts many policies it patches each one at once, on an aiohttp
    connector without a connection limit: about one TLS connection per policy (each with a
    128 KiB read buffer), closed again ~20 s later. glibc's default thresholds grow after
    such frees, so the freed heap stayed resident: bench/operator_scale.py measured RSS
    rising from 134 to 357 MiB in that burst at 500 policies and staying there, with ~50
    sockets open afterwards. With fixed 128 KiB thresholds, buffers that large are mmapped
    and unmapped on free, and free memory at the heap top is trimmed. Returns whether the
    C library took the settings (False outside glibc, where this does nothing).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))


@click.command("run")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="RLSCALE_NAMESPACES",
    help="Watch this namespace (repeatable; globs like 'team-*' work). Env: space-separated list.",
)
@click.option("-A", "--all-namespaces", is_flag=True, envvar="RLSCALE_ALL_NAMESPACES", help="Watch every namespace.")
@click.option(
    "--peering",
    "peering_name",
    envvar="RLSCALE_PEERING",
    default=None,
    help="Kopf peering object name: replicas sharing it elect one active replica (needs the KopfPeering CRDs).",
)
@click.option("--standalone", is_flag=True, envvar="RLSCALE_STANDALONE", help="No peering (a single replica).")
@click.option("--priority", type=int, default=None, envvar="RLSCALE_PRIORITY", help="Peering priority.")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default="http://0.0.0.0:8081/healthz",
    show_default=True,
    envvar="RLSCALE_LIVENESS",
    help="Kopf's liveness endpoint (empty to disable).",
)
@click.option("--metrics-port", type=int, default=8080, show_default=True, envvar="RLSCALE_METRICS_PORT")
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, envvar="RLSCALE_METRICS_ADDR")
@click.option("--prometheus-url", default=None, envvar="RLSCALE_PROMETHEUS_URL", help="Default Prometheus URL.")
@click.option(
    "--prometheus-url-allowlist",
    default="",
    envvar="RLSCALE_PROMETHEUS_URL_ALLOWLIST",
    help="Comma-separated URL prefixes a policy's spec.prometheus.url must start with.",
)
@click.option(
    "--trust-custom-queries",
    is_flag=True,
    envvar="RLSCALE_TRUST_CUSTOM_QUERIES",
    help="Accept any PromQL in policies (no namespace-scope check). Only for clusters whose policy authors "
    "may read all metrics.",
)
@click.option("--workers", type=int, default=8, show_default=True, envvar="RLSCALE_WORKERS")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    peering_name: str | None,
    standalone: bool,
    priority: int | None,
    liveness_endpoint: str,
    metrics_port: int,
    metrics_addr: str,
    prometheus_url: str | None,
    prometheus_url_allowlist: str,
    trust_custom_queries: bool,
    workers: int,
    verbose: bool,
) -> None:
    """Run the rlscale operator against the current cluster (in-cluster config or kubeconfig)."""
    from rlscale.operator import handlers  # noqa: F401  (registers the handlers)
    from rlscale.operator.settings import OperatorSettings

    if not namespaces and not all_namespaces:
        raise click.UsageError("choose what to watch: --namespace NS (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces are mutually exclusive")
    if peering_name and standalone:
        raise click.UsageError("--peering and --standalone are mutually exclusive")
    settings = OperatorSettings(
        trust_custom_queries=trust_custom_queries,
        prometheus_url=prometheus_url,
        prometheus_url_allowlist=prometheus_url_allowlist,  # type: ignore[arg-type]  # split by the validator
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        workers=workers,
    )
    return_freed_memory_promptly()
    kopf.configure(verbose=verbose, log_prefix=True)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=[ns for item in namespaces for ns in item.split()],
        standalone=standalone or not peering_name,
        peering_name=peering_name,
        priority=priority,
        liveness_endpoint=liveness_endpoint or None,
        memo=kopf.Memo(settings=settings),
    )
