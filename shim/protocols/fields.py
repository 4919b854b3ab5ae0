"""Typed reads of request fields that name the field when the value is wrong."""
import math

from ..errors import InvalidRequest

_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", dict: "an object", list: "an array"}


def _describe(types):
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _is_type(value, types):
    for t in types:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value)
        if t is int and isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            return True
        if t is int and isinstance(value, bool):
            continue
        if isinstance(value, t):
            return True
    return False


def _coerce(value, types):
    if int in types and float not in types and isinstance(value, float):
        return int(value)
    return value


def get(body, name, *types, default=None, required=False, param=None, within=None):
    """body[name] if it has one of types; None/absent gives default; else an error naming param (or within.name)."""
    value = body.get(name)
    if value is None:
        if required:
            param = _param(name, param, within)
            raise InvalidRequest(f"'{param}' is required", param=param)
        return default
    if not _is_type(value, types):
        param = _param(name, param, within)
        raise InvalidRequest(f"'{param}' must be {_describe(types)}, got {type_name(value)}", param=param)
    return _coerce(value, types)


def _param(name, param, within):
    # Spelt out only for an error: most fields are absent or right, and formatting each name costs more than the get.
    return param or (f"{within}.{name}" if within else name)


def in_range(value, name, low=None, high=None):
    """The value itself, or an error naming the field when it is outside [low, high]."""
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if low is not None and high is not None else (
            f"at least {low}" if low is not None else f"at most {high}")
        raise InvalidRequest(f"'{name}' must be {bounds}, got {value}", param=name)
    return value


def one_of(value, name, choices):
    """The value itself, or an error listing the accepted values."""
    if value is not None and value not in choices:
        raise InvalidRequest(f"'{name}' must be one of {', '.join(map(repr, choices))}, got {value!r}", param=name)
    return value


def type_name(value):
    """The JSON name of a value's type, for error messages."""
    if isinstance(value, float) and not math.isfinite(value):  # JSON has none; Python's reader takes NaN, Infinity
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    for t, name in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a number"),
                    (dict, "an object"), (list, "an array")):
        if isinstance(value, t):
            return name
    return "null" if value is None else type(value).__name__


def require_object(body, what="request body"):
    """The body itself if it is a JSON object."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the {what} must be a JSON object, got {type_name(body)}",
                             param=None if what == "request body" else what)
    return body


MAX_STOPS = 16
"Stop sequences a request may give (OpenAI's own `stop` takes 4); every one is checked against each new token."
MAX_STOP_CHARS = 256
"The longest stop sequence accepted, in characters."


def stop_list(value, name, limit=MAX_STOPS):
    """A stop value (a string or a list of strings) as a tuple, within the limits on count and length."""
    if value is None:
        return ()
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest(f"'{name}' must be a string or an array of strings", param=name)
    if len(value) > limit:
        raise InvalidRequest(f"'{name}' may hold at most {limit} sequences, got {len(value)}", param=name)
    longest = max(map(len, value), default=0)
    if longest > MAX_STOP_CHARS:
        raise InvalidRequest(f"'{name}' sequences may be at most {MAX_STOP_CHARS} characters long, got one of "
                             f"{longest}", param=name)
    return tuple(s for s in value if s)
