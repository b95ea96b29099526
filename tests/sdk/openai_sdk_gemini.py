"""The official OpenAI Python SDK against Switchyard routes served by Gemini: the Gemini API (`gemini`, key in
x-goog-api-key) and Gemini on Vertex AI (`vertex`, a service account's token), with the scripted stand-in
tests/sdk/google_azure_standin.py behind them. Every check runs once per backend.

Env: SWITCHYARD_URL (gateway base, no /v1), SWITCHYARD_KEY. Gateway models (tests/google_azure.rs's config):
gemini / vertex-gemini, gemini-throttle / vertex-gemini-throttle (429 RESOURCE_EXHAUSTED), gemini-unsafe /
vertex-gemini-unsafe (the prompt blocked: promptFeedback.blockReason SAFETY), gemini-embedding /
vertex-embedding. Prints one line per check and 'N passed, N failed'.

What the stand-in answers: `Bonjour from Gemini stand-in. You said: <last user text>` (`Vertex Gemini` on
Vertex); a functionCall of the first declared function with {"location": "Paris"} when tools are offered and
the last turn holds no functionResponse; usage 11 prompt, 7 candidates; streams in two chunks delimited by
CRLF pairs, with cumulative usage; embeddings [0.1 + k, 0.2 + k, 0.3 + k] for the k-th input (Vertex: token
count = words per input).
"""
import json
import os

import openai

from harness import check, run

client = openai.OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"],
                       max_retries=0, timeout=20)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
QUESTION = {"role": "user", "content": "Weather in Paris?"}
BACKENDS = [("gemini", "Gemini", "gemini-embedding"), ("vertex-gemini", "Vertex Gemini", "vertex-embedding")]


def per_backend(fn):
    for model, label, embedding in BACKENDS:
        def bound(fn=fn, model=model, label=label, embedding=embedding):
            fn(model, label, embedding)
        bound.__name__ = f"{fn.__name__}[{model}]"
        check(bound)
    return fn


@per_backend
def chat(model, label, _embedding):
    r = client.chat.completions.create(model=model, max_tokens=50, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == f"Bonjour from {label} stand-in. You said: Hello", r
    assert r.choices[0].finish_reason == "stop", r
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7), r.usage


@per_backend
def stream(model, label, _embedding):
    chunks = list(client.chat.completions.create(model=model, max_tokens=50, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Hello"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Bonjour from {label} stand-in. You said: Hello", text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == 7 and usage[-1].prompt_tokens == 11, usage


@per_backend
def tools_round_trip(model, label, _embedding):
    r = client.chat.completions.create(model=model, max_tokens=50, messages=[QUESTION], tools=TOOLS)
    assert r.choices[0].finish_reason == "tool_calls", r
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    r = client.chat.completions.create(model=model, max_tokens=50, tools=TOOLS, messages=[
        QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"}])
    assert r.choices[0].finish_reason == "stop", r
    assert r.choices[0].message.content.startswith(f"Bonjour from {label} stand-in"), r
    assert "Sunny, 21C" in r.choices[0].message.content, "the tool's result reached Gemini"


@per_backend
def streamed_tool_call(model, label, _embedding):
    chunks = list(client.chat.completions.create(model=model, max_tokens=50, stream=True, messages=[QUESTION],
                                                 tools=TOOLS))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    names = [tc.function.name for tc in calls if tc.function and tc.function.name]
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert names == ["get_weather"] and json.loads(args) == {"location": "Paris"}, (names, args)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"], finishes


@per_backend
def embeddings(model, label, embedding):
    r = client.embeddings.create(model=embedding, input=["alpha", "beta"])
    assert [d.index for d in r.data] == [0, 1], r
    assert abs(r.data[1].embedding[0] - 1.1) < 1e-6 and len(r.data[0].embedding) == 3, r.data
    r = client.embeddings.create(model=embedding, input="gamma", encoding_format="float")
    assert abs(r.data[0].embedding[0] - 0.1) < 1e-6, r.data


@per_backend
def quota_error_is_a_rate_limit_error(model, label, _embedding):
    try:
        client.chat.completions.create(model=model + "-throttle", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429 and "exhausted" in e.message, e.message
    else:
        raise AssertionError("a throttled model must fail")


@per_backend
def blocked_prompt_is_a_400_content_filter(model, label, _embedding):
    for stream in (False, True):
        try:
            r = client.chat.completions.create(model=model + "-unsafe", stream=stream,
                                               messages=[{"role": "user", "content": "x"}])
            if stream:
                list(r)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.code == "content_filter", (stream, e.code, e.message)
            assert "SAFETY" in e.message, e.message
        else:
            raise AssertionError(f"a blocked prompt must fail (stream={stream})")


run()
