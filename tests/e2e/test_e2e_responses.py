"""Real Responses clients against a real shim (gunicorn): the Agents SDK's Runner, and Codex CLI (`codex exec`).

Both reach a fake OpenAI-compatible upstream through shim's openai backend (Responses translated to chat
completions), since Codex's ~10k-token prompt is beyond the embedded model's window; Codex against the embedded
model must get that refusal as a clear error at once, not after five retries.
"""
import asyncio
import json
import os
import re
import subprocess

import pytest
import requests
from werkzeug.wrappers import Response

from harness.servers import npm_cli, running_shim
from tests.fake_upstream import FakeUpstream, openai_answer

ANSWER = "Shim relayed this answer from the fake upstream."
CONFIG = """
[backends.fake]
type = "openai"
url = "{upstream}/v1"
models = ["fake-gpt"]
"""


def _chunk(delta, finish=None):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake-gpt",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def upstream_answer(record):
    """The fake OpenAI-compatible upstream: a get_weather call when offered and unanswered, else ANSWER."""
    if record.path.endswith("/models"):
        return Response(json.dumps({"object": "list", "data": [{"id": "fake-gpt", "object": "model"}]}),
                        mimetype="application/json")
    body = record.json
    offered = {t["function"]["name"] for t in body.get("tools") or ()}
    answered = any(m["role"] == "tool" for m in body["messages"])
    usage = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake-gpt", "choices": [],
             "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}
    if "get_weather" in offered and not answered:
        call = {"index": 0, "id": "call_w", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        return openai_answer(record, _chunk({"role": "assistant", "tool_calls": [call]}), _chunk({}, "tool_calls"),
                             usage)
    text = "It is sunny in Oslo." if answered else ANSWER
    return openai_answer(record, _chunk({"role": "assistant", "content": text}), _chunk({}, "stop"), usage)


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(upstream_answer) as fake:
        yield fake


@pytest.fixture(scope="module")
def shim(upstream):
    """A real shim serving the embedded model and, through its openai backend, the fake upstream's fake-gpt."""
    with running_shim(CONFIG.format(upstream=upstream.url)) as url:
        yield url


@pytest.fixture(scope="module")
def codex():
    """The Codex CLI, installed from npm once into a cache directory."""
    return npm_cli("@openai/codex", "codex")


def run_codex(binary, shim, model, tmp_path):
    """`codex exec` with a CODEX_HOME whose provider is shim; (exit code, stdout + stderr)."""
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "shim"\n\n[model_providers.shim]\nname = "shim"\n'
        f'base_url = "{shim}/v1"\nwire_api = "responses"\n')
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(tmp_path), "NO_COLOR": "1"}
    done = subprocess.run([binary, "exec", "--skip-git-repo-check", "Say hello."], cwd=work, env=env,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def responses_requests(shim, status):
    """How many /v1/responses requests shim answered with status (from its Prometheus metrics)."""
    text = requests.get(shim + "/metrics", timeout=10).text
    counts = re.findall(r'shim_requests_total\{([^}]*)\} ([0-9.e+]+)', text)
    return sum(float(n) for labels, n in counts if '"/v1/responses"' in labels and f'status="{status}"' in labels)


def test_agents_sdk_runner_calls_a_function_tool_through_shim(shim):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    set_tracing_disabled(True)
    asked = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny"

    client = AsyncOpenAI(base_url=shim + "/v1", api_key="unused", max_retries=0)
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                  model=OpenAIResponsesModel("fake-gpt", client))
    result = asyncio.run(Runner.run(agent, "What is the weather in Oslo?"))
    assert asked == ["Oslo"]
    assert result.final_output == "It is sunny in Oslo."


def test_codex_exec_prints_the_upstreams_answer(codex, shim, upstream, tmp_path):
    seen = len(upstream.requests)
    code, output = run_codex(codex, shim, "fake-gpt", tmp_path)
    assert code == 0, output
    assert ANSWER in output
    body = next(r.json for r in upstream.requests[seen:] if r.path.endswith("/chat/completions"))
    assert body["messages"][0]["role"] == "system" and len(body["messages"][0]["content"]) > 1000
    assert body["tools"], "Codex's tools reach the upstream as functions"


def test_codex_against_the_embedded_model_gets_a_context_length_error_without_retries(codex, shim, tmp_path):
    before = responses_requests(shim, 400)
    code, output = run_codex(codex, shim, "smollm2:135m", tmp_path)
    assert code != 0
    assert "context" in output.lower(), output
    assert responses_requests(shim, 400) - before == 1, output
