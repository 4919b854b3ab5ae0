"""Read a GGUF file's header (metadata, tensor shapes) without loading the model (for listings and /api/show)."""
import struct

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_ARRAY_KEPT = 64
"Longer arrays (the vocabulary, merges) are skipped: only their length is kept."


class GGUFError(ValueError):
    """The file is not a readable GGUF file."""


def read_header(path):
    """The key/value metadata of a GGUF file (long arrays replaced by their length) and its number of parameters."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file")
        version, tensors, count = struct.unpack("<IQQ", _read_exactly(fh, 20))
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is too old")
        metadata = dict(_read_pair(fh) for _ in range(count))
        return metadata, sum(_read_tensor_size(fh) for _ in range(tensors))


def _read_tensor_size(fh):
    """One tensor info (name, dimensions, type, offset); returns its number of elements."""
    _read_string(fh)
    elements = 1
    for _ in range(_read(fh, "<I")):
        elements *= _read(fh, "<Q")
    _read_exactly(fh, 12)  # the tensor's type and data offset
    return elements


def _read_exactly(fh, size):
    data = fh.read(size)
    if len(data) != size:
        raise GGUFError("truncated GGUF header")
    return data


def _read(fh, fmt):
    return struct.unpack(fmt, _read_exactly(fh, struct.calcsize(fmt)))[0]


def _read_string(fh):
    length = _read(fh, "<Q")
    return fh.read(length).decode("utf-8", errors="replace")


def _read_value(fh, kind):
    if kind in _SCALARS:
        return _read(fh, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(fh)
    if kind == _ARRAY:
        item_kind, length = _read(fh, "<I"), _read(fh, "<Q")
        if length > MAX_ARRAY_KEPT and item_kind in _SCALARS:
            fh.seek(length * struct.calcsize(_SCALARS[item_kind]), 1)
            return length
        items = [_read_value(fh, item_kind) for _ in range(length)]
        return items if length <= MAX_ARRAY_KEPT else length
    raise GGUFError(f"unknown GGUF value type {kind}")


def _read_pair(fh):
    key = _read_string(fh)
    return key, _read_value(fh, _read(fh, "<I"))


FIM_KEYS = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id")
"Where a GGUF names its fill-in-the-middle tokens (newer and older spellings)."
THINKING_MARK = "<think>"
"What the chat template of a model that thinks before it answers writes (or opens)."


def capabilities(metadata, template):
    """What a GGUF's model can do, as Ollama names it: an embedding model, or completion and what else it has."""
    if f"{metadata.get('general.architecture', '')}.pooling_type" in metadata:
        return ("embedding",)  # Ollama's rule: a pooling type makes it an embedding model, not a generator
    found = ["completion"]
    if "tools" in template:
        found.append("tools")
    if any(key in metadata for key in FIM_KEYS):
        found.append("insert")
    if THINKING_MARK in template:
        found.append("thinking")
    return tuple(found)
