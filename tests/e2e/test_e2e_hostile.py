"""Hostile input against real gunicorn and the real model: no 5xx, and the worker lives on."""
import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import (ANTHROPIC_POSTS, MAX_TOKEN_FIELDS, OLLAMA_POSTS, OPENAI_POSTS, check_shape, mutated_body,
                           raw_bodies)
from tests.support import HOSTILE_CASES as CASES


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bodies_against_gunicorn_and_the_real_model(shim_url, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS[:5] + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "smollm2:135m"))
    for field, value in MAX_TOKEN_FIELDS.items():  # keep every generation to one token, whatever else changed
        if body.get(field) is None or (isinstance(body[field], int) and not isinstance(body[field], bool)):
            body[field] = value
    if body.get("options") is None:
        body["options"] = {}
    if isinstance(body["options"], dict):
        body["options"] = {**body["options"], "num_predict": 1}
    response = requests.post(shim_url + path, data=json.dumps(body), timeout=60,
                             headers={"Content-Type": "application/json"})
    check_shape(path, response.status_code, response.content)
    CASES["count"] += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS), raw=raw_bodies())
def test_raw_bodies_against_gunicorn(shim_url, path, raw):
    response = requests.post(shim_url + path, data=raw, timeout=30, headers={"Content-Type": "application/json"})
    check_shape(path, response.status_code, response.content)
    assert requests.get(shim_url + "/health", timeout=5).ok, "the worker must live on"
    CASES["count"] += 1


@pytest.mark.parametrize("path, body, field", [
    ("/api/show", b'{"model": "\\ud800"}', "'model'"),
    ("/api/chat", b'{"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi \\udfff"}]}',
     "'messages[0].content'"),
])
def test_lone_surrogate_against_gunicorn(shim_url, path, body, field):
    response = requests.post(shim_url + path, data=body, timeout=30, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and f"{field} holds a lone UTF-16 surrogate" in response.json()["error"]
    CASES["count"] += 1
