"""Loaded policy models, one per source, shared by every policy that names the source.

Loading an ONNX session costs milliseconds and megabytes, so a thousand policies on the
built-in model share one :class:`~rlscale.policy.model.PolicyModel`. A ConfigMap source is
re-read at most every ``refresh_s`` and reloaded only when its ``resourceVersion``
changed. A refused model (missing, corrupt, built for another spec) is cached as its
error message, so the baseline takes over and the condition says why, without re-parsing
a bad file on every decision.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlscale.policy.model import DEFAULT_MODEL_PATH, ModelMismatchError, PolicyModel


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model or the reason there is none; ``source`` is shown in status."""

    source: str
    model: PolicyModel | None
    error: str | None
    version: str = ""


GetConfigMap = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class ModelStore:
    """Caches models by source."""

    def __init__(
        self, get_configmap: GetConfigMap, *, builtin_path: Path = DEFAULT_MODEL_PATH, refresh_s: float = 60.0
    ):
        self._get_configmap = get_configmap
        self._builtin_path = builtin_path
        self._refresh_s = refresh_s
        self._cache: dict[tuple[str, ...], tuple[float, LoadedModel]] = {}

    def builtin(self) -> LoadedModel:
        key = ("builtin",)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and (cached[1].model is not None or now - cached[0] < self._refresh_s):
            return cached[1]
        source = f"builtin:{self._builtin_path.name}"
        if not self._builtin_path.is_file():
            loaded = LoadedModel(source, None, f"the built-in model {self._builtin_path} is not shipped in this build")
        else:
            loaded = _load(lambda: PolicyModel.load(self._builtin_path), source)
        self._cache[key] = (now, loaded)
        return loaded

    async def from_configmap(self, namespace: str, name: str, key: str) -> LoadedModel:
        """The model in ConfigMap ``namespace/name`` under ``binaryData[key]`` (or ``data[key]``, base64)."""
        cache_key = ("configMap", namespace, name, key)
        source = f"configMap:{namespace}/{name}[{key}]"
        now = time.monotonic()
        cached = self._cache.get(cache_key)
        if cached is not None and now - cached[0] < self._refresh_s:
            return cached[1]
        cm = await self._get_configmap(namespace, name)
        if cm is None:
            loaded = LoadedModel(source, None, f"ConfigMap {namespace}/{name} not found (spec.model.configMapRef)")
        else:
            version = str(cm.get("metadata", {}).get("resourceVersion", ""))
            if cached is not None and cached[1].version == version and version:
                loaded = cached[1]
            else:
                loaded = _from_configmap(cm, key, source, version)
        self._cache[cache_key] = (now, loaded)
        return loaded


def _from_configmap(cm: dict[str, Any], key: str, source: str, version: str) -> LoadedModel:
    raw = (cm.get("binaryData") or {}).get(key)
    if raw is None:
        raw = (cm.get("data") or {}).get(key)
    if raw is None:
        keys = sorted({*(cm.get("binaryData") or {}), *(cm.get("data") or {})})
        return LoadedModel(
            source, None, f"spec.model.configMapRef.key: no key {key!r} in the ConfigMap (it has {keys})", version
        )
    try:
        data = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        return LoadedModel(source, None, f"key {key!r} is not base64 model data: {exc}", version)
    loaded = _load(lambda: PolicyModel.from_bytes(data, source=source), source)
    return LoadedModel(loaded.source, loaded.model, loaded.error, version)


def _load(fn: Callable[[], PolicyModel], source: str) -> LoadedModel:
    try:
        return LoadedModel(source, fn(), None)
    except ModelMismatchError as exc:
        return LoadedModel(source, None, str(exc))
