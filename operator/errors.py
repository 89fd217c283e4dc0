"""Turning pydantic validation errors into one readable line per field, in the CRD's spelling.

A user who typed ``spec.limits.minReplicas: 5`` should read ``spec.limits.minReplicas``
in the error, not ``min_replicas`` (policy/'s Python name) or pydantic's JSON dump.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from rlscale.operator import models
from rlscale.operator.naming import crd_alias, rename_fields_in_message


def _policy_field_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for obj in vars(models).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            for field in obj.model_fields:
                alias = crd_alias(field)
                if alias != field:
                    names[field] = alias
    return names


_NAMES = _policy_field_names()


def describe_validation_error(exc: ValidationError, prefix: str = "spec") -> str:
    """``spec.limits.minReplicas: Input should be …; spec.rollout: minRatio (0.9) must not exceed maxRatio (0.1)``."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join([prefix, *(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])])
        loc = loc.replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {rename_fields_in_message(msg, _NAMES)}")
    return "; ".join(lines)
