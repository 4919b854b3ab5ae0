"""shim: one server that speaks the OpenAI and Ollama protocols in front of llama.cpp, Ollama and OpenAI servers."""
__version__ = "0.1.0"


def create_app(settings=None):
    """Build the Flask app (see shim.app)."""
    from .app import create_app as build
    return build(settings)
