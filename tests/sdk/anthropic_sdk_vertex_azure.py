"""The official Anthropic Python SDK against Switchyard routes served by Claude on Vertex AI
(`vertex_anthropic`: Anthropic's format, relayed) and by an Azure OpenAI deployment (translated), with the
scripted stand-in tests/sdk/google_azure_standin.py behind them.

Env: SWITCHYARD_URL (gateway base), SWITCHYARD_KEY. Gateway models (tests/google_azure.rs's config):
vertex-claude, vertex-claude-throttle (Vertex's 429 RESOURCE_EXHAUSTED in Google's shape), azure-gpt,
azure-filtered (400 content_filter), azure-throttle (429). Prints one line per check and 'N passed, N
failed'.

What the stand-in answers: `Bonjour from Vertex Claude stand-in. You said: <last user text>` (Azure: `Bonjour
from Azure stand-in. …`); a call of the first tool with {"location": "Paris"} when tools are offered and the
last message holds no tool result; usage 11 in, 7 out; count-tokens 5 + the words of system and messages.
"""
import os

import anthropic

from harness import check, run

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key=os.environ["SWITCHYARD_KEY"],
                             max_retries=0, timeout=20)
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
QUESTION = {"role": "user", "content": "Weather in Paris?"}
MODELS = [("vertex-claude", "Vertex Claude"), ("azure-gpt", "Azure")]


def per_model(fn):
    for model, label in MODELS:
        def bound(fn=fn, model=model, label=label):
            fn(model, label)
        bound.__name__ = f"{fn.__name__}[{model}]"
        check(bound)
    return fn


@per_model
def message(model, label):
    m = client.messages.create(model=model, max_tokens=50, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello"}])
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].text == f"Bonjour from {label} stand-in. You said: Hello", m
    assert m.stop_reason == "end_turn", m.stop_reason
    assert (m.usage.input_tokens, m.usage.output_tokens) == (11, 7), m.usage


@per_model
def stream(model, label):
    with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == f"Bonjour from {label} stand-in. You said: Hello", text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7, final


@per_model
def tools_round_trip(model, label):
    m = client.messages.create(model=model, max_tokens=50, tools=TOOLS, messages=[QUESTION])
    assert m.stop_reason == "tool_use", m
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "Paris"}, use
    m = client.messages.create(model=model, max_tokens=50, tools=TOOLS, messages=[
        QUESTION, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}]}])
    assert m.stop_reason == "end_turn" and m.content[0].text.startswith(f"Bonjour from {label} stand-in"), m


@per_model
def streamed_tool_use(model, label):
    with client.messages.stream(model=model, max_tokens=50, tools=TOOLS, messages=[QUESTION]) as s:
        final = s.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"location": "Paris"} and final.stop_reason == "tool_use", final


@check
def count_tokens_on_vertex():
    r = client.messages.count_tokens(model="vertex-claude", system="Be brief.",
                                      messages=[{"role": "user", "content": "Hello there"}])
    assert r.input_tokens == 9, r


@check
def vertex_quota_error_is_a_rate_limit_error():
    try:
        client.messages.create(model="vertex-claude-throttle", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.RateLimitError as e:
        assert e.body["error"]["type"] == "rate_limit_error", e.body
        assert "RESOURCE_EXHAUSTED" in e.body["error"]["message"], e.body
    else:
        raise AssertionError("a throttled model must fail")


@check
def azure_filtered_prompt_is_a_400_in_anthropics_shape():
    try:
        client.messages.create(model="azure-filtered", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.BadRequestError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
        assert "content management policy" in e.body["error"]["message"], e.body
    else:
        raise AssertionError("a filtered prompt must fail")


@check
def azure_throttle_is_a_rate_limit_error():
    try:
        client.messages.create(model="azure-throttle", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.RateLimitError as e:
        assert e.response.headers.get("retry-after") == "2", e.response.headers
    else:
        raise AssertionError("a throttled deployment must fail")


run()
