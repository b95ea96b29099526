"""The official OpenAI Python SDK's Responses API against a Switchyard route.

Env: SWITCHYARD_URL, SWITCHYARD_KEY, SWITCHYARD_MODEL, BACKEND_KIND (`passthrough`: an OpenAI backend
that serves /responses itself; `translated`: any other backend, reached through translation).
Prints 'N passed, N failed'.

Every streamed event and every response object is also validated strictly against the SDK's own
pydantic models (the SDK itself only constructs them leniently).
"""
import json
import os

import httpx
import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

from harness import check, run

URL = os.environ["SWITCHYARD_URL"]
KEY = os.environ["SWITCHYARD_KEY"]
client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=20)
MODEL = os.environ["SWITCHYARD_MODEL"]
KIND = os.environ["BACKEND_KIND"]
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                         "required": ["location"], "additionalProperties": False},
          "strict": True}]
EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


class Weather(pydantic.BaseModel):
    location: str


def strict(response):
    """Validates a response object against the SDK's model, strictly."""
    Response.model_validate(response.model_dump() if hasattr(response, "model_dump") else response)


def raw_events(**body):
    """The SSE events of a streamed create, as JSON, each validated against the SDK's event union."""
    events = []
    with httpx.stream("POST", URL + "/v1/responses", json={"model": MODEL, "stream": True, **body},
                      headers={"authorization": f"Bearer {KEY}"}, timeout=20) as r:
        assert r.status_code == 200, r.read()
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                assert data["type"] == name, (name, data)
                EVENTS.validate_python(data)
                events.append(data)
    return events


@check
def create_text_with_instructions_and_usage():
    r = client.responses.create(model=MODEL, instructions="Be brief.", input="Hello")
    strict(r)
    assert r.id.startswith("resp_"), r.id
    assert r.status == "completed", r.status
    assert r.output_text, r
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@check
def function_call_round_trip():
    first = client.responses.create(model=MODEL, tools=TOOLS, input=[{"role": "user", "content": "Weather in Paris?"}])
    strict(first)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", first.output
    assert json.loads(calls[0].arguments) == {"location": "Paris"}, calls[0].arguments
    follow = client.responses.create(model=MODEL, tools=TOOLS, input=[
        {"role": "user", "content": "Weather in Paris?"},
        *[c.model_dump(exclude_none=True) for c in calls],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"},
    ])
    strict(follow)
    assert not [o for o in follow.output if o.type == "function_call"], follow.output
    assert follow.output_text, follow


@check
def text_format_json_schema_parses():
    r = client.responses.parse(model=MODEL, input="Where is it sunny? Answer with a city.", text_format=Weather)
    assert r.output_parsed == Weather(location="Paris"), r.output_text


@check
def stream_text_events_and_final_response():
    deltas = []
    with client.responses.stream(model=MODEL, input="Hello") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    strict(final)
    assert deltas and "".join(deltas) == final.output_text, (deltas, final.output_text)
    assert final.usage is not None and final.usage.output_tokens > 0, final.usage


@check
def stream_function_call_arguments():
    args = []
    with client.responses.stream(model=MODEL, tools=TOOLS, input="Weather in Paris?") as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                args.append(event.delta)
        final = stream.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert calls and json.loads(calls[0].arguments) == {"location": "Paris"}, final.output
    assert "".join(args) == calls[0].arguments


@check
def stream_text_format_parses():
    with client.responses.stream(model=MODEL, input="A city, please.", text_format=Weather) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Weather(location="Paris"), final.output_text


@check
def raw_stream_is_the_documented_event_sequence():
    events = raw_events(input="Hello")
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events))), events
    for needed in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                   "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
        assert needed in kinds, (needed, kinds)
    Response.model_validate(events[-1]["response"])
    calls = raw_events(input="Weather in Paris?", tools=TOOLS)
    kinds = [e["type"] for e in calls]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds, kinds


@check
def create_with_stream_true_iterates_events():
    seen = [e.type for e in client.responses.create(model=MODEL, input="Hello", stream=True)]
    assert seen[0] == "response.created" and seen[-1] == "response.completed", seen


if KIND == "passthrough":
    @check
    def calls_by_id_reach_the_backend_that_created_the_response():
        r = client.responses.create(model=MODEL, input="Hello")
        got = client.responses.retrieve(r.id)
        assert got.id == r.id, (got.id, r.id)
        items = client.responses.input_items.list(r.id)
        assert items.data and items.data[0].type == "message", items
        cancelled = client.responses.cancel(r.id)
        assert cancelled.id == r.id and cancelled.status == "cancelled", cancelled
        client.responses.delete(r.id)

    @check
    def previous_response_id_continues_on_the_same_backend():
        first = client.responses.create(model=MODEL, input="Hello")
        follow = client.responses.create(model=MODEL, input="And again", previous_response_id=first.id)
        assert follow.previous_response_id == first.id, (follow.previous_response_id, first.id)

    @check
    def input_tokens_count():
        r = client.responses.input_tokens.count(model=MODEL, input="Hello")
        assert r.input_tokens == 42, r

    @check
    def unknown_response_id_is_404():
        try:
            client.responses.retrieve("resp_not_from_this_gateway")
        except openai.NotFoundError as e:
            assert "resp_not_from_this_gateway" in str(e), str(e)
        else:
            raise AssertionError("expected NotFoundError")
else:
    @check
    def translated_responses_are_not_stored_so_retrieve_is_404():
        r = client.responses.create(model=MODEL, input="Hello")
        try:
            client.responses.retrieve(r.id)
        except openai.NotFoundError as e:
            assert r.id in str(e), str(e)
        else:
            raise AssertionError("expected NotFoundError")

    @check
    def built_in_tools_are_rejected_naming_the_tool():
        try:
            client.responses.create(model=MODEL, input="News?", tools=[{"type": "web_search"}])
        except openai.BadRequestError as e:
            assert "web_search" in str(e), str(e)
        else:
            raise AssertionError("expected BadRequestError")

    @check
    def previous_response_id_is_rejected_naming_it():
        try:
            client.responses.create(model=MODEL, input="More", previous_response_id="resp_x")
        except openai.BadRequestError as e:
            assert "previous_response_id" in str(e), str(e)
        else:
            raise AssertionError("expected BadRequestError")


run()
