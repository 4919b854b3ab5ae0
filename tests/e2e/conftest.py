"""Fixtures of the end-to-end tier: the official clients, on the shim a module names as its `front`."""
import ollama
import openai
import pytest


@pytest.fixture(scope="module")
def front(shim_url):
    """The shim a module's clients talk to: the shared embedded-model server, unless the module names another."""
    return shim_url


@pytest.fixture(scope="module")
def oai(front):
    """The official openai client on `front` (no retries, so a failure shows at once)."""
    with openai.OpenAI(base_url=front + "/v1", api_key="unused", max_retries=0, timeout=240) as client:
        yield client


@pytest.fixture(scope="module")
def oll(front):
    """The official ollama client on `front`."""
    with ollama.Client(host=front, timeout=240) as client:
        yield client
