"""Ollama's `options` table and its other native knobs (keep_alive, think), shared by both protocols."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .. import generation as g
from ..errors import InvalidRequest
from . import fields as f

# The load-time options among these (num_keep, num_batch, num_gpu, main_gpu, num_thread, use_mmap, use_mlock, numa,
# low_vram, draft_num_predict) are type-checked and have no effect: shim loads models from its own configuration,
# as an Ollama server ignores them once the model is loaded.
INT_OPTIONS = ("num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
               "main_gpu", "num_thread", "draft_num_predict")
FLOAT_OPTIONS = ("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                 "frequency_penalty")
BOOL_OPTIONS = ("use_mmap", "use_mlock", "numa", "low_vram", "penalize_newline")
THINK_LEVELS = ("low", "medium", "high", "max")


@dataclass(frozen=True)
class Options:
    """The parsed options: sampling, limits, and the raw dict for backends that take it as it is."""

    sampling: g.Sampling = field(default_factory=g.Sampling)
    max_tokens: int | None = None
    stop: tuple = ()
    num_ctx: int | None = None
    raw: dict = field(default_factory=dict)


def parse_options(options, param_prefix="options."):
    """Parse and type-check an Ollama options object; unknown keys are ignored, as Ollama does."""
    f.require_object(options, "'options' value")
    if not options:  # what nearly every request sends: nothing to check
        return Options()
    for names, kind in ((INT_OPTIONS, int), (FLOAT_OPTIONS, float), (BOOL_OPTIONS, bool)):
        for name in names:
            f.get(options, name, kind, param=param_prefix + name)
    o = options.get
    num_predict = f.get(options, "num_predict", int)
    seed = f.get(options, "seed", int)
    sampling = g.Sampling(
        temperature=f.in_range(f.get(options, "temperature", float), param_prefix + "temperature", 0),
        top_p=f.in_range(f.get(options, "top_p", float), param_prefix + "top_p", 0, 1),
        top_k=f.in_range(f.get(options, "top_k", int), param_prefix + "top_k", 0),
        min_p=f.in_range(f.get(options, "min_p", float), param_prefix + "min_p", 0, 1),
        typical_p=f.in_range(f.get(options, "typical_p", float), param_prefix + "typical_p", 0, 1),
        seed=None if seed is None or seed < 0 else seed,
        repeat_penalty=f.in_range(f.get(options, "repeat_penalty", float), param_prefix + "repeat_penalty", 0),
        repeat_last_n=f.in_range(f.get(options, "repeat_last_n", int), param_prefix + "repeat_last_n", -1),
        presence_penalty=f.get(options, "presence_penalty", float),
        frequency_penalty=f.get(options, "frequency_penalty", float),
    )
    num_ctx = f.in_range(f.get(options, "num_ctx", int), param_prefix + "num_ctx", 1)
    return Options(
        sampling=sampling,
        max_tokens=None if num_predict is None or num_predict < 0 else num_predict,
        stop=f.stop_list(o("stop"), param_prefix + "stop"),
        num_ctx=num_ctx,
        raw=dict(options),
    )


_SAMPLING_NAMES = tuple(field.name for field in dataclasses.fields(g.Sampling))


def merge_sampling(base, override):
    """Sampling with override's set fields on top of base's."""
    values = {name: getattr(override, name) for name in _SAMPLING_NAMES}
    changes = {name: value for name, value in values.items() if value not in (None, {})}
    return dataclasses.replace(base, **changes) if changes else base


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_keep_alive(value):
    """keep_alive as seconds: a number of seconds or a Go duration string like "5m" or "1h30m"."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return float(text)
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise InvalidRequest(f"'keep_alive' must be a number of seconds or a duration like \"5m\", got {value!r}",
                         param="keep_alive")


def parse_think(body):
    """Ollama's think (a boolean or a level) as a Think; OpenAI's reasoning_effort maps onto it as Ollama maps it."""
    think = body.get("think")
    effort = body.get("reasoning_effort")
    if effort is not None:
        return think_of_effort(effort, "reasoning_effort")
    if think is None:
        return None
    if isinstance(think, bool):
        return g.Think(enabled=think)
    if think in THINK_LEVELS:
        return g.Think(enabled=True, effort=think)
    raise InvalidRequest(f"'think' must be a boolean or one of {', '.join(THINK_LEVELS)}, got {think!r}",
                         param="think")


EFFORTS = {"none": None, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
           "xhigh": "max"}
"OpenAI's reasoning efforts and the think levels they map to (as Ollama maps them); none turns thinking off."


def think_of_effort(effort, param):
    """An OpenAI reasoning effort as a Think."""
    if effort not in EFFORTS:
        raise InvalidRequest(f"'{param}' must be one of {', '.join(EFFORTS)}, got {effort!r}", param=param)
    return g.Think(enabled=EFFORTS[effort] is not None, effort=EFFORTS[effort])


def effort_of_think(think):
    """A Think as OpenAI's reasoning_effort, or None to leave it to the model (no Think, or thinking at no level)."""
    if think is None:
        return None
    if not think.enabled:
        return "none"
    return {"max": "xhigh"}.get(think.effort or "", think.effort)


def think_value(think):
    """A Think as Ollama's think field spells it: false, true or a level."""
    return (think.effort or True) if think.enabled else False
