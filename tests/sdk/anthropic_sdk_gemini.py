"""The official Anthropic Python SDK against Switchyard routes served by Gemini: the Gemini API (`gemini`)
and Gemini on Vertex AI (`vertex`), translated, with the scripted stand-in tests/sdk/google_azure_standin.py
behind them: what a Claude Code-style client needs (messages, streams, tools, token counts, errors). Every
check runs once per backend.

Env: SWITCHYARD_URL (gateway base), SWITCHYARD_KEY. Gateway models (tests/google_azure.rs's config): gemini /
vertex-gemini, gemini-throttle / vertex-gemini-throttle (429), gemini-unsafe / vertex-gemini-unsafe (a blocked
prompt). Prints one line per check and 'N passed, N failed'.

What the stand-in answers: see tests/sdk/openai_sdk_gemini.py; countTokens answers 5 + the words of the
counted contents and system instruction.
"""
import os

import anthropic

from harness import check, run

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key=os.environ["SWITCHYARD_KEY"],
                             max_retries=0, timeout=20)
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
QUESTION = {"role": "user", "content": "Weather in Paris?"}
BACKENDS = [("gemini", "Gemini"), ("vertex-gemini", "Vertex Gemini")]


def per_backend(fn):
    for model, label in BACKENDS:
        def bound(fn=fn, model=model, label=label):
            fn(model, label)
        bound.__name__ = f"{fn.__name__}[{model}]"
        check(bound)
    return fn


@per_backend
def message(model, label):
    m = client.messages.create(model=model, max_tokens=50, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello"}])
    assert m.content[0].text == f"Bonjour from {label} stand-in. You said: Hello", m
    assert m.stop_reason == "end_turn", m.stop_reason
    assert (m.usage.input_tokens, m.usage.output_tokens) == (11, 7), m.usage


@per_backend
def stream(model, label):
    with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == f"Bonjour from {label} stand-in. You said: Hello", text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7, final


@per_backend
def tools_round_trip(model, label):
    m = client.messages.create(model=model, max_tokens=50, tools=TOOLS, messages=[QUESTION])
    assert m.stop_reason == "tool_use", m
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "Paris"}, use
    m = client.messages.create(model=model, max_tokens=50, tools=TOOLS, messages=[
        QUESTION, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}]}])
    assert m.stop_reason == "end_turn", m
    assert m.content[0].text.startswith(f"Bonjour from {label} stand-in") and "Sunny, 21C" in m.content[0].text, m


@per_backend
def streamed_tool_use(model, label):
    with client.messages.stream(model=model, max_tokens=50, tools=TOOLS, messages=[QUESTION]) as s:
        final = s.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"location": "Paris"} and final.stop_reason == "tool_use", final


@per_backend
def count_tokens(model, label):
    r = client.messages.count_tokens(model=model, system="Be brief.",
                                      messages=[{"role": "user", "content": "Hello there"}])
    assert r.input_tokens == 9, r


@per_backend
def quota_error_is_a_rate_limit_error(model, label):
    try:
        client.messages.create(model=model + "-throttle", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.RateLimitError as e:
        assert e.body["error"]["type"] == "rate_limit_error", e.body
    else:
        raise AssertionError("a throttled model must fail")


@per_backend
def blocked_prompt_is_a_400(model, label):
    for stream in (False, True):
        try:
            if stream:
                with client.messages.stream(model=model + "-unsafe", max_tokens=10,
                                            messages=[{"role": "user", "content": "x"}]) as s:
                    s.get_final_message()
            else:
                client.messages.create(model=model + "-unsafe", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        except anthropic.BadRequestError as e:
            assert e.body["error"]["type"] == "invalid_request_error" and "SAFETY" in e.body["error"]["message"], e.body
        else:
            raise AssertionError(f"a blocked prompt must fail (stream={stream})")


run()
