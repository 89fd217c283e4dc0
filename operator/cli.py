"""``rlscale run``: start the operator (Kopf) with rlscale's flags.

Every flag also reads an ``RLSCALE_*`` environment variable (click's ``envvar``), so the
Helm chart can set them either way. The operator's own settings are declared once, in
:class:`~rlscale.operator.settings.OperatorSettings`, and their flags are generated from it.
Kopf's own essentials — which namespaces to watch, peering, the liveness endpoint — are
declared here and passed straight to :func:`kopf.run`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import click
import kopf
from pydantic.fields import FieldInfo

from rlscale.operator.settings import OperatorSettings

F = TypeVar("F", bound=Callable[..., Any])

#: What the command line adds to a setting's description.
_CLI_NOTES: dict[str, str] = {
    "trust_custom_queries": "Only for clusters whose policy authors may read all metrics.",
}

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


def _option_for(name: str, field: FieldInfo, env_prefix: str) -> Callable[[F], F]:
    """One :class:`OperatorSettings` field as a flag: ``metrics_port`` → ``--metrics-port``, ``RLSCALE_METRICS_PORT``.

    Types map to what a flag or an environment variable can hold: a tuple of strings is one
    comma-separated string (the settings' validator splits it), ``X | None`` is an ``X``
    that may be left unset.
    """
    flag = "--" + name.replace("_", "-")
    help_text = " ".join(filter(None, (field.description, _CLI_NOTES.get(name))))
    common: dict[str, Any] = {"envvar": env_prefix + name.upper(), "help": help_text or None}
    if field.is_required():
        raise TypeError(f"OperatorSettings.{name}: a setting needs a default to be an optional flag")
    annotation, default = field.annotation, field.get_default(call_default_factory=True)
    if annotation is bool:
        return click.option(f"{flag}/--no-{flag[2:]}" if default else flag, is_flag=True, default=default, **common)
    if get_origin(annotation) is tuple and get_args(annotation) == (str, ...):
        joined = ",".join(default)
        common["help"] = f"{help_text} Comma-separated." if help_text else "Comma-separated."
        return click.option(flag, type=str, default=joined, show_default=bool(joined), **common)
    args = get_args(annotation)
    optional = get_origin(annotation) in (Union, UnionType) and len(args) == 2 and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else annotation
    if base not in (str, int, float):
        raise TypeError(f"OperatorSettings.{name}: no command-line form for {annotation!r}")
    return click.option(flag, type=base, default=default, show_default=default is not None, **common)


def settings_options(command: F) -> F:
    """Add one option per :class:`OperatorSettings` field, in the model's order.

    The settings model is the one place a setting is declared (name, type, default,
    description); the flags follow it, so a new setting is a new flag without touching this
    file. click reads the ``RLSCALE_*`` variable when the flag is absent, so the chart may
    set either.
    """
    env_prefix = str(OperatorSettings.model_config.get("env_prefix", ""))
    for name, field in reversed(OperatorSettings.model_fields.items()):
        command = _option_for(name, field, env_prefix)(command)
    return command


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
@settings_options
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    peering_name: str | None,
    standalone: bool,
    priority: int | None,
    liveness_endpoint: str,
    verbose: bool,
    **settings_values: Any,
) -> None:
    """Run the rlscale operator against the current cluster (in-cluster config or kubeconfig)."""
    from rlscale.operator import handlers  # noqa: F401  (registers the handlers)

    if not namespaces and not all_namespaces:
        raise click.UsageError("choose what to watch: --namespace NS (repeatable) or --all-namespaces")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces are mutually exclusive")
    if peering_name and standalone:
        raise click.UsageError("--peering and --standalone are mutually exclusive")
    settings = OperatorSettings(**settings_values)
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
