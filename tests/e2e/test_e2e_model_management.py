"""Model management through a real gunicorn shim, driven by the official ollama client."""
import json

import ollama
import pytest

from tests.fake_upstream import FakeUpstream
from tests.management import ADMIN, ROUTED, answer


@pytest.fixture
def upstream():
    with FakeUpstream(answer) as fake:
        yield fake


def test_the_official_client_pulls_through_shim(upstream, shim_url_with):
    url = shim_url_with(f'embedded_model = false\nadmin_keys = ["sk-admin"]\n[backends.box]\ntype = "ollama"\n'
                        f'url = "{upstream.url}"\nmodels = {json.dumps(ROUTED)}\n')
    client = ollama.Client(host=url, headers=ADMIN)
    try:
        statuses = [p.status for p in client.pull("qwen3:4b", stream=True)]
        assert statuses == ["pulling manifest", "pulling abc", "success"]
        assert client.copy("llama3:8b", "backup").status == "success"
    finally:
        client._client.close()  # an idle keep-alive connection would hold the server's graceful stop
