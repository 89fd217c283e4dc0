"""How the CRD spells policy/'s field names: camelCase, with unit suffixes spelled out.

The CRD's fields *are* the fields of :mod:`rlscale.policy`'s models under another name, so
every range, default and cross-field rule is defined once (in policy/) and the CRD only
renames. ``scale_up_cooldown_s`` becomes ``scaleUpCooldownSeconds``, ``cpu_limit_min_m``
becomes ``cpuLimitMinMillicores`` — Kubernetes API conventions spell units out in the
field name instead of abbreviating them.
"""

from __future__ import annotations

import re

#: Unit suffixes of policy/'s snake_case names and their CRD spelling.
_SUFFIXES: dict[str, str] = {"s": "Seconds", "m": "Millicores", "mib": "MiB", "ms": "Ms"}


def crd_alias(name: str) -> str:
    """The CRD (camelCase) name of a policy/ field, e.g. ``cpu_limit_step_m`` → ``cpuLimitStepMillicores``."""
    head, *rest = name.split("_")
    return head + "".join(_SUFFIXES.get(part, part[:1].upper() + part[1:]) for part in rest)


def rename_fields_in_message(message: str, names: dict[str, str]) -> str:
    """Replace policy/'s snake_case names in a validation message with their CRD spelling.

    policy/'s validators name fields the Python way ("min_replicas (5) must not exceed
    max_replicas (2)"); a user editing YAML should read the names they typed.
    """
    if not names:
        return message
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], message)
