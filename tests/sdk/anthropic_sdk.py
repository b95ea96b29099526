"""The official Anthropic Python SDK against a running Switchyard.

Env: SWITCHYARD_URL, SWITCHYARD_KEY, SWITCHYARD_MODEL, and BACKEND_KIND (`anthropic` for an Anthropic
backend, `openai` for an OpenAI-compatible one, whose answers come back translated). Prints one line per
check and 'N passed, N failed'; exits non-zero on any failure.
"""
import os

import anthropic

from harness import check, run

URL = os.environ["SWITCHYARD_URL"]
MODEL = os.environ["SWITCHYARD_MODEL"]
KIND = os.environ["BACKEND_KIND"]
client = anthropic.Anthropic(base_url=URL, api_key=os.environ["SWITCHYARD_KEY"], max_retries=0, timeout=20)
# The scripted OpenAI-compatible fake streams only when asked by header.
STREAM_HEADERS = {"x-fake-mode": "sse"} if KIND == "openai" else {}
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]


@check
def messages_create_text():
    m = client.messages.create(model=MODEL, max_tokens=100, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello"}])
    assert m.type == "message" and m.role == "assistant"
    text = "".join(b.text for b in m.content if b.type == "text")
    assert text in ("Bonjour from fake Claude", "fake reply"), text
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@check
def messages_create_tool_use_and_tool_result_round_trip():
    m = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS,
                               messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert m.stop_reason == "tool_use", m.stop_reason
    uses = [b for b in m.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"location": "Paris"}, m.content
    follow = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": "get_weather", "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C and sunny"}]},
    ])
    assert follow.type == "message"


@check
def messages_stream_text():
    with client.messages.stream(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                                extra_headers=STREAM_HEADERS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text, "no text streamed"
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0


@check
def messages_stream_tool_use():
    with client.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS, extra_headers=STREAM_HEADERS,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].input == {"location": "Paris"}, final.content
    assert final.stop_reason == "tool_use"


@check
def count_tokens():
    if KIND == "anthropic":
        r = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
        assert r.input_tokens == 42
    else:
        try:
            client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
        except anthropic.BadRequestError as e:
            assert "not supported" in str(e), str(e)
        else:
            raise AssertionError("count_tokens against an OpenAI backend must be refused")


@check
def unknown_model_is_not_found_error():
    try:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as e:
        assert e.status_code == 404
        assert e.body["type"] == "error", e.body
    else:
        raise AssertionError("expected NotFoundError")


@check
def upstream_rate_limit_maps_to_rate_limit_error():
    body = ('{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}' if KIND == "anthropic"
            else '{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}')
    try:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}],
                               extra_headers={"x-fake-mode": "raw", "x-fake-status": "429", "x-fake-body": body})
    except anthropic.RateLimitError as e:
        assert "slow down" in str(e)
        assert e.body["error"]["type"] == "rate_limit_error", e.body
    else:
        raise AssertionError("expected RateLimitError")



run()
