"""Deliberately broken builds of rlscale, to show that the fault suite's assertions can fail.

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has one.
``tests/faults/faults_helpers.broken_env()`` puts this folder on the operator's ``PYTHONPATH``
when ``FAULTS_BROKEN_BUILD`` names a bug below; the patch is then applied before rlscale's
modules are imported by anything else, so modules that import a patched function by name get
the broken one. Without ``FAULTS_BROKEN_BUILD`` (always, in a normal run) this does nothing.

    FAULTS_BROKEN_BUILD=unknown_as_zero PYTHONPATH=tests/faults/broken_build \
        .venv/bin/pytest tests/faults -m faults -k prometheus        # must FAIL

Each bug is a classic autoscaler mistake, smallest possible:

* ``unknown_as_zero`` — a missing metric is read as 0 (the HPA's documented anti-pattern):
  the operator sees an idle service while Prometheus is down and scales it down.
* ``keep_stale_model`` — a model that fails to load is ignored and the last good one stays
  in use, so ``ModelLoaded`` never turns False and the learned policy keeps deciding.
* ``stuck_after_api_error`` — after the first failed Kubernetes call every later call hangs:
  a reconcile loop that never recovers from an API server outage.
* ``forget_state`` — the controller state stored in status is ignored on start-up (an
  operator that keeps its memory in-process only): decision numbers and the gate restart.
* ``never_demote`` — the rollout gate never lowers the learned policy's ratio.
* ``one_interval_credit`` — the gate of the release before the fault suite: each interval is
  credited only to whoever decided into it, and the baseline never moves a limit back (a
  scale-down's late damage is billed to the baseline, so an always-down model is promoted).
* ``leak_per_reconcile`` — every reconcile keeps 16 KiB alive forever (a cache without
  eviction): what the soak (``make soak``) exists to catch.
"""

from __future__ import annotations

import os

_BUG = os.environ.get("FAULTS_BROKEN_BUILD", "")


def _unknown_as_zero() -> None:
    import dataclasses

    from rlscale.operator import observe

    original = observe.build_observation

    def build_observation(*args, **kwargs):  # type: ignore[no-untyped-def]
        obs, _ = original(*args, **kwargs)
        zeros = {
            f.name: 0.0
            for f in dataclasses.fields(obs)
            if getattr(obs, f.name) is None and f.metadata["source"].kind != "deployment"
        }
        return dataclasses.replace(obs, **zeros), []

    observe.build_observation = build_observation


def _keep_stale_model() -> None:
    from rlscale.operator import modelstore

    original = modelstore._from_configmap
    good: dict[str, modelstore.LoadedModel] = {}

    def _from_configmap(cm, key, source, version):  # type: ignore[no-untyped-def]
        loaded = original(cm, key, source, version)
        if loaded.model is not None:
            good[source] = loaded
            return loaded
        return good.get(source, loaded)

    modelstore._from_configmap = _from_configmap


def _stuck_after_api_error() -> None:
    import asyncio

    from rlscale.operator import kube

    original = kube.KubeApi._call
    failed: list[bool] = []

    async def _call(self, what, fn):  # type: ignore[no-untyped-def]
        if failed:
            await asyncio.Event().wait()  # never returns
        try:
            return await original(self, what, fn)
        except kube.NotFound:
            raise
        except kube.ApiError:
            failed.append(True)
            raise

    kube.KubeApi._call = _call  # type: ignore[method-assign]


def _forget_state() -> None:
    from rlscale.operator import reconcile
    from rlscale.policy.decide import ControllerState

    def _state(tick, config):  # type: ignore[no-untyped-def]
        return ControllerState.initial(config)

    reconcile.Reconciler._state = staticmethod(_state)  # type: ignore[method-assign]


def _never_demote() -> None:
    from rlscale.policy import gate

    original = gate._move

    def _move(cfg, state, delta):  # type: ignore[no-untyped-def]
        if delta > 0:
            original(cfg, state, delta)

    gate._move = _move


def _one_interval_credit() -> None:
    import importlib

    decide = importlib.import_module("rlscale.policy.decide")  # the package re-exports a function of that name

    def credited(state, decided_by):  # type: ignore[no-untyped-def]
        return decided_by

    def restored_limits(self, cpu_limit_m, memory_limit_mib):  # type: ignore[no-untyped-def]
        return cpu_limit_m, memory_limit_mib

    decide.credited = credited  # looked up in decide's globals at call time
    decide.ControllerState.restored_limits = restored_limits  # type: ignore[method-assign]


def _leak_per_reconcile() -> None:
    from rlscale.operator import reconcile

    original = reconcile.Reconciler.reconcile
    kept: list[bytearray] = []

    async def leaky(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kept.append(bytearray(16 * 1024))
        return await original(self, *args, **kwargs)

    reconcile.Reconciler.reconcile = leaky  # type: ignore[method-assign]


_BUGS = {
    "unknown_as_zero": _unknown_as_zero,
    "keep_stale_model": _keep_stale_model,
    "stuck_after_api_error": _stuck_after_api_error,
    "forget_state": _forget_state,
    "never_demote": _never_demote,
    "one_interval_credit": _one_interval_credit,
    "leak_per_reconcile": _leak_per_reconcile,
}

if _BUG:
    if _BUG not in _BUGS:
        raise SystemExit(f"FAULTS_BROKEN_BUILD={_BUG!r}: not one of {', '.join(sorted(_BUGS))}")
    _BUGS[_BUG]()
