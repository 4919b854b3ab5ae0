"""/v1/responses through the Flask app over the fake backend, with the official openai client and raw HTTP."""
import json

import httpx
import openai
import pytest

from shim import generation as g
from shim.app import create_app
from shim.config import Settings
from shim.errors import ContextLengthExceeded, UpstreamError
from shim.router import Route, Router
from tests.support import events_of

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def app(fake):
    router = Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")])
    return create_app(Settings(embedded_model=False, response_store="memory"), router=router)


@pytest.fixture
def http(app):
    return app.test_client()


@pytest.fixture
def sdk(app):
    transport = httpx.WSGITransport(app=app)
    return openai.OpenAI(base_url="http://shim/v1", api_key="x", http_client=httpx.Client(transport=transport))


def test_sdk_create_returns_the_text_and_usage(sdk, fake):
    response = sdk.responses.create(model="fake-model", input="Hi", instructions="Be brief")
    assert response.output_text == "Hello world"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (3, 2, 5)
    assert fake.history[-1].messages == (g.Message("system", "Be brief"), g.Message("user", "Hi"))


def test_sdk_stream_yields_typed_events_in_order(sdk):
    with sdk.responses.stream(model="fake-model", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 2 and kinds[-1] == "response.completed"
    assert final.output_text == "Hello world"


def test_sdk_retrieve_input_items_previous_response_id_and_delete(sdk, fake):
    first = sdk.responses.create(model="fake-model", input="My name is Ada.")
    assert sdk.responses.retrieve(first.id).output_text == "Hello world"
    items = sdk.responses.input_items.list(first.id)
    assert [i.content[0].text for i in items.data] == ["My name is Ada."]
    second = sdk.responses.create(model="fake-model", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert [(m.role, m.content) for m in fake.history[-1].messages] == [
        ("user", "My name is Ada."), ("assistant", "Hello world"), ("user", "What is my name?")]
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as err:
        sdk.responses.create(model="fake-model", input="again", previous_response_id=first.id)
    assert err.value.body["param"] == "previous_response_id"


def test_store_false_keeps_nothing(sdk, app):
    response = sdk.responses.create(model="fake-model", input="Hi", store=False)
    assert response.store is False and app.extensions["shim"].store.get(response.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_a_streamed_response_is_stored_too(sdk, app):
    with sdk.responses.stream(model="fake-model", input="Hi") as stream:
        final = stream.get_final_response()
    assert app.extensions["shim"].store.get(final.id)["response"]["output"][0]["content"][0]["text"] == \
        "Hello world"


def test_function_tool_call_and_its_output_round_trip(sdk, fake):
    fake.say(reason="tool_calls", tool_calls=[g.ToolCall("call_1", "get_weather", '{"city":"Oslo"}')])
    response = sdk.responses.create(model="fake-model", input="Weather in Oslo?", tools=[WEATHER])
    call = next(item for item in response.output if item.type == "function_call")
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", {"city": "Oslo"})
    fake.say("Rainy.")
    sdk.responses.create(model="fake-model", previous_response_id=response.id, tools=[WEATHER],
                         input=[{"type": "function_call_output", "call_id": "call_1", "output": "rain"}])
    last = fake.history[-1].messages
    assert last[-2].tool_calls[0].name == "get_weather"
    assert (last[-1].role, last[-1].content, last[-1].name) == ("tool", "rain", "get_weather")


def test_custom_tool_is_offered_as_a_function_and_answers_as_custom_tool_call(http, fake):
    fake.say(reason="tool_calls", tool_calls=[g.ToolCall("call_1", "apply_patch", '{"input":"*** Begin Patch"}')])
    body = {"model": "fake-model", "input": "Fix it", "tools": [{"type": "custom", "name": "apply_patch"}],
            "stream": True}
    events = events_of(http.post("/v1/responses", json=body).data)
    assert fake.history[-1].tools[0].parameters["properties"] == {"input": {"type": "string"}}
    done = [p["item"] for name, p in events if name == "response.output_item.done"]
    assert done[0]["type"] == "custom_tool_call" and done[0]["input"] == "*** Begin Patch"
    assert [name for name, _ in events].count("response.custom_tool_call_input.delta") == 1


def test_event_lines_name_every_payload_and_no_done_marker(http):
    data = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "stream": True}).data
    assert b"[DONE]" not in data
    assert all(name == payload["type"] for name, payload in events_of(data))


def test_context_length_before_the_first_byte_is_a_400_naming_the_code(http, fake):

    def failing(request, cancel):
        raise ContextLengthExceeded("prompt is 10000 tokens; the window is 2048", param="messages")
        yield
    fake.generate = failing
    answer = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "stream": True})
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "context_length_exceeded"


def test_failure_after_the_first_byte_is_response_failed_and_nothing_after(http, fake):
    fake.fail_after(("partial",), UpstreamError("upstream broke off"))
    events = events_of(http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "stream": True}).data)
    names = [name for name, _ in events]
    assert names[-1] == "response.failed" and "response.completed" not in names
    assert events[-1][1]["response"]["error"]["code"] == "server_error"


def test_length_is_response_incomplete(http, fake):
    fake.say("a", reason="length")
    events = events_of(http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "stream": True,
                                                          "max_output_tokens": 1}).data)
    assert events[-1][0] == "response.incomplete"
    assert fake.history[-1].max_tokens == 1


def test_errors_in_openai_shape(http):
    answer = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "background": True})
    assert answer.status_code == 400 and answer.json["error"]["param"] == "background"
    assert http.get("/v1/responses/resp_nope").status_code == 404
    assert http.get("/v1/responses/resp_nope").json["error"]["type"] == "invalid_request_error"
    assert http.delete("/v1/responses/resp_nope").status_code == 404
    assert http.post("/v1/responses/resp_nope/cancel").status_code == 400
    unknown = http.post("/v1/responses", json={"model": "nope", "input": "Hi"})
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "model_not_found"


def test_input_items_pages_after_limit_and_order(http):
    items = [{"role": "user", "content": str(i)} for i in range(5)]
    response_id = http.post("/v1/responses", json={"model": "fake-model", "input": items}).json["id"]
    page = http.get(f"/v1/responses/{response_id}/input_items?order=asc&limit=2").json
    assert [i["content"][0]["text"] for i in page["data"]] == ["0", "1"] and page["has_more"] is True
    rest = http.get(f"/v1/responses/{response_id}/input_items?order=asc&after={page['last_id']}").json
    assert [i["content"][0]["text"] for i in rest["data"]] == ["2", "3", "4"] and rest["has_more"] is False
    newest = http.get(f"/v1/responses/{response_id}/input_items").json
    assert newest["data"][0]["content"][0]["text"] == "4"
    assert http.get(f"/v1/responses/{response_id}/input_items?limit=0").status_code == 400


def test_input_tokens_counts_the_prompt(sdk, fake):
    counted = sdk.responses.input_tokens.count(model="fake-model", input="Hi")
    assert counted.input_tokens == 3 and counted.object == "response.input_tokens"
    assert fake.history[-1].max_tokens == 1


def test_without_a_store_previous_response_id_is_refused_and_store_echoes_false(app, http):
    app.extensions["shim"].store = None
    assert http.post("/v1/responses", json={"model": "fake-model", "input": "Hi"}).json["store"] is False
    answer = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "previous_response_id": "r"})
    assert answer.status_code == 400 and answer.json["error"]["param"] == "previous_response_id"


def test_a_backend_refusal_names_the_responses_field(http, fake):
    def refusing(request, cancel):
        from shim.errors import Unsupported
        raise Unsupported('"fake-model" does not support thinking', param="think")
        yield
    fake.generate = refusing
    answer = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "reasoning": {"effort": "low"}})
    assert answer.status_code == 400 and answer.json["error"]["param"] == "reasoning.effort"


def test_keys_are_asked_for_on_every_responses_route(fake):
    router = Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")])
    http = create_app(Settings(embedded_model=False, api_keys=("k-123456",)), router=router).test_client()
    for method, path in (("post", "/v1/responses"), ("get", "/v1/responses/r"), ("delete", "/v1/responses/r"),
                         ("post", "/v1/responses/input_tokens")):
        answer = getattr(http, method)(path, json={"model": "fake-model", "input": "Hi"})
        assert answer.status_code == 401 and answer.json["error"]["code"] == "invalid_api_key"
    ok = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi"},
                   headers={"Authorization": "Bearer k-123456"})
    assert ok.status_code == 200

