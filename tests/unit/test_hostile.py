"""Hostile input in process: malformed and adversarial bodies at every endpoint never give a 5xx."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim.app import create_app
from shim.config import Settings
from shim.router import Route, Router
from tests.fakes import FakeBackend
from tests.hostile import (ANTHROPIC_POSTS, OLLAMA_POSTS, OPENAI_POSTS, check_shape, mutated_body, raw_bodies,
                           with_lone_surrogate)
from tests.support import HOSTILE_CASES as CASES


@pytest.fixture(scope="module")
def client():
    fake = FakeBackend("M")
    router = Router({"fake": fake}, [Route("M", "fake", "M")])
    return create_app(Settings(embedded_model=False, max_body_bytes=64 * 1024), router=router).test_client()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bodies_in_process(client, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "M"))
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    check_shape(path, response.status_code, response.get_data())
    CASES["count"] += 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS), raw=raw_bodies(),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_raw_bodies_in_process(client, path, raw, content_type):
    response = client.post(path, data=raw, content_type=content_type)
    check_shape(path, response.status_code, response.get_data())
    CASES["count"] += 1


def test_enormous_body_is_413(client):
    response = client.post("/api/chat", data=b"x" * (65 * 1024), content_type="application/json")
    assert response.status_code == 413
    CASES["count"] += 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_lone_surrogates_anywhere_are_a_400_naming_the_field(client, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "M"))
    key = data.draw(st.sampled_from(sorted(body) + ["unknown_field"]))
    body[key] = data.draw(with_lone_surrogate)
    response = client.post(path, data=json.dumps(body), content_type="application/json")  # as \udxxx escapes
    check_shape(path, response.status_code, response.get_data())
    assert response.status_code == 400
    error = response.get_json()
    message = error["error"]["message"] if path.startswith("/v1/") else error.get("message") or error["error"]
    assert "lone UTF-16 surrogate" in message and f"'{key}" in message
    CASES["count"] += 1


@pytest.mark.parametrize("path, template, field", [
    ("/v1/chat/completions", '{"model":"M","messages":[{"role":"user","content":"hi"}],"temperature":%s}',
     "temperature"),
    ("/api/chat", '{"model":"M","messages":[{"role":"user","content":"hi"}],"options":{"top_p":%s}}',
     "options.top_p"),
    ("/v1/messages", '{"model":"M","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"top_p":%s}',
     "top_p"),
])
@pytest.mark.parametrize("spelled", ["NaN", "Infinity", "-Infinity"])
def test_a_number_json_cannot_spell_is_a_400_saying_what_it_got(client, path, template, field, spelled):
    """Python's JSON reader takes NaN and the infinities; the field refusing them says which it got."""
    response = client.post(path, data=template % spelled, content_type="application/json")
    check_shape(path, response.status_code, response.get_data())
    assert response.status_code == 400 and f"'{field}' must be a number, got {spelled}" in response.get_data(True)
