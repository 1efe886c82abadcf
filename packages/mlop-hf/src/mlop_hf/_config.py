"""The run config of a transformers training: model config, training arguments and PEFT config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REDACTED", "redact", "trainer_config"]

REDACTED: Final = "<redacted>"
# Keys whose values are credentials: hub_token, api_key, ..._password, secret.
_SECRET: Final = re.compile(r"(^|_)(token|api_?key|password|passwd|secret|credentials?)$", re.IGNORECASE)


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` whose credential-like keys hold :data:`REDACTED` instead of their value.

    transformers already masks ``*_token`` fields as ``<HUB_TOKEN>``; this catches what it does not, at
    any depth.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out[key] = redact(value)
        elif _SECRET.search(str(key)) and value not in (None, "", False) and not _is_mask(value):
            out[key] = REDACTED
        else:
            out[key] = value
    return out


def _is_mask(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def _as_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        out = to_dict()
        return dict(out) if isinstance(out, Mapping) else None
    return None


def trainer_config(args: Any, model: Any = None) -> dict[str, Any]:
    """The config of a ``Trainer`` run, flat as transformers' own trackers store it.

    The model's config, overlaid by the training arguments (``args.to_dict()``, which masks tokens), with
    the PEFT config under ``peft_config`` (one entry per adapter) and the parameter count under
    ``model/num_parameters``. Credentials are masked.

    Args:
        args: the ``TrainingArguments``.
        model: the model being trained, or None.
    """
    config: dict[str, Any] = {}
    model_config = _as_dict(getattr(model, "config", None))
    if model_config:
        config.update(model_config)
    config.update(args.to_dict())
    peft = getattr(model, "peft_config", None)
    if isinstance(peft, Mapping) and peft:
        config["peft_config"] = {str(k): _as_dict(adapter) or str(adapter) for k, adapter in peft.items()}
    elif peft is not None:
        config["peft_config"] = _as_dict(peft) or str(peft)
    num_parameters = getattr(model, "num_parameters", None)
    if callable(num_parameters):
        try:
            config["model/num_parameters"] = int(num_parameters())
        except Exception:  # broad: counting parameters of a foreign model may fail in many ways
            pass
    return redact(config)
