"""shim: one server that speaks OpenAI, Ollama and Anthropic protocols in front of llama.cpp and upstream servers."""
__version__ = "0.1.0"


def create_app(settings=None):
    """Build the Flask app (see shim.app)."""
    from .app import create_app as build
    return build(settings)
