"""The registry of upstream backend types: config validation and the router both read this one table."""
import importlib

BACKEND_TYPES = {
    "ollama": "shim.backends.ollama_upstream:OllamaBackend",
    "openai": "shim.backends.openai_compat:OpenAICompatBackend",
    "anthropic": "shim.backends.anthropic_upstream:AnthropicBackend",
}
"A backend type's name in the settings, and the class (module:name) that serves it; imported only when used."


def backend_class(type_name):
    """The class that serves a backend type."""
    module, _, name = BACKEND_TYPES[type_name].partition(":")
    return getattr(importlib.import_module(module), name)
