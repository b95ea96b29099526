"""The official OpenAI Python SDK against Switchyard routes served by AWS Bedrock backends (the scripted
stand-in tests/sdk/bedrock_standin.py behind them): a Converse backend and an InvokeModel (Anthropic body)
backend. Every check runs once per backend kind.

Env: SWITCHYARD_URL (gateway base, no /v1), SWITCHYARD_KEY, and the gateway model names (defaults in
brackets): BEDROCK_CONVERSE_MODEL [bedrock-converse], BEDROCK_INVOKE_MODEL [bedrock-claude],
BEDROCK_THROTTLE_MODEL [bedrock-throttle], BEDROCK_INVOKE_THROTTLE_MODEL [bedrock-claude-throttle],
BEDROCK_STREAM_THROTTLE_MODEL [bedrock-stream-throttle], BEDROCK_INVOKE_STREAM_THROTTLE_MODEL
[bedrock-claude-stream-throttle]. Prints one line per check and 'N passed, N failed'.

Gateway config this script expects (PORT = the stand-in's port; it prints `PORT <n>` on start):

  "backends": [
    {"name": "bedrock", "schema": "bedrock", "region": "us-east-1", "base_url": "http://127.0.0.1:PORT",
     "auth": {"type": "aws", "access_key_id": "AKIDSTANDIN", "secret_access_key": "standin/secret/key",
              "session_token": "standin-session-token"}},
    {"name": "bedrock-claude", "schema": "bedrock_anthropic", "region": "us-east-1",
     "base_url": "http://127.0.0.1:PORT", "auth": <the same>}
  ],
  "routes": [
    {"model": "bedrock-converse", "backends": [{"backend": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0"}]},
    {"model": "bedrock-claude", "backends": [{"backend": "bedrock-claude",
      "model": "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"}]},
    {"model": "bedrock-throttle", "backends": [{"backend": "bedrock", "model": "standin-throttle"}]},
    {"model": "bedrock-claude-throttle", "backends": [{"backend": "bedrock-claude", "model": "standin-throttle"}]},
    {"model": "bedrock-stream-throttle", "backends": [{"backend": "bedrock", "model": "standin-stream-throttle"}]},
    {"model": "bedrock-claude-stream-throttle", "backends": [{"backend": "bedrock-claude",
      "model": "standin-stream-throttle"}]}
  ],
  "clients": [{"name": "sdk", "key": <SWITCHYARD_KEY>}]

What the stand-in answers (see its docstring): text `Bonjour from fake Bedrock. You said: <last user text
or tool result text>`; a call of the first tool with {"location": "Paris"} when tools are offered and the
last user message holds no tool result; usage input 11 (+3 cache read, 0 cache write), output 7, so OpenAI
usage prompt_tokens 14 (11 + 3 + 0, the gateway's convention for Anthropic), completion_tokens 7,
cached_tokens 3.
"""
import json
import os

import openai

from harness import check, run

client = openai.OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"],
                       max_retries=0, timeout=20)
BACKENDS = [
    ("converse", os.environ.get("BEDROCK_CONVERSE_MODEL", "bedrock-converse"),
     os.environ.get("BEDROCK_THROTTLE_MODEL", "bedrock-throttle"),
     os.environ.get("BEDROCK_STREAM_THROTTLE_MODEL", "bedrock-stream-throttle")),
    ("invoke", os.environ.get("BEDROCK_INVOKE_MODEL", "bedrock-claude"),
     os.environ.get("BEDROCK_INVOKE_THROTTLE_MODEL", "bedrock-claude-throttle"),
     os.environ.get("BEDROCK_INVOKE_STREAM_THROTTLE_MODEL", "bedrock-claude-stream-throttle")),
]
TEXT = "Bonjour from fake Bedrock"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]


def per_backend(fn):
    """Registers fn once per backend kind, as `name[kind]`, called with (model, throttle, stream_throttle)."""
    for kind, model, throttle, stream_throttle in BACKENDS:
        def bound(fn=fn, args=(model, throttle, stream_throttle)):
            fn(*args)
        bound.__name__ = f"{fn.__name__}[{kind}]"
        check(bound)
    return fn


@per_backend
def chat_text_and_usage(model, _throttle, _stream_throttle):
    r = client.chat.completions.create(model=model, max_tokens=100, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == f"{TEXT}. You said: Hello", r
    assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens == 14, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
    assert r.usage.prompt_tokens_details.cached_tokens == 3, r.usage


@per_backend
def chat_stream_text_with_usage(model, _throttle, _stream_throttle):
    stream = client.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hello"}])
    text, finish, usage, chunks = "", None, None, 0
    for c in stream:
        chunks += 1
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
        if c.usage:
            usage = c.usage
    assert text == f"{TEXT}. You said: Hello", text
    assert chunks >= 3, chunks
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 7 and usage.prompt_tokens == 14, usage


@per_backend
def chat_tool_call_then_tool_result_round_trip(model, _throttle, _stream_throttle):
    question = {"role": "user", "content": "Weather in Paris?"}
    r = client.chat.completions.create(model=model, tools=TOOLS, tool_choice="auto", messages=[question])
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0].finish_reason
    call = r.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    assert json.loads(call.function.arguments) == {"location": "Paris"}, call.function.arguments
    assert call.id
    follow = client.chat.completions.create(model=model, tools=TOOLS, messages=[
        question,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ])
    assert follow.choices[0].finish_reason == "stop", follow.choices[0].finish_reason
    assert follow.choices[0].message.content == f"{TEXT}. You said: 18C and sunny", follow.choices[0].message


@per_backend
def chat_stream_tool_call(model, _throttle, _stream_throttle):
    stream = client.chat.completions.create(model=model, stream=True, tools=TOOLS,
                                            messages=[{"role": "user", "content": "Weather in Paris?"}])
    args, name, finish, ids = "", None, None, set()
    for c in stream:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            name = (tc.function.name if tc.function else None) or name
            args += (tc.function.arguments if tc.function else None) or ""
            if tc.id:
                ids.add(tc.id)
        finish = c.choices[0].finish_reason or finish
    assert name == "get_weather" and json.loads(args) == {"location": "Paris"}, (name, args)
    assert len(ids) == 1, ids
    assert finish == "tool_calls", finish


@per_backend
def upstream_throttling_is_rate_limit_error(_model, throttle, _stream_throttle):
    try:
        client.chat.completions.create(model=throttle, messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert "Too many requests" in str(e), str(e)
    else:
        raise AssertionError("expected RateLimitError")


@per_backend
def mid_stream_throttling_exception_ends_the_stream_with_an_error(_model, _throttle, stream_throttle):
    stream = client.chat.completions.create(model=stream_throttle, stream=True,
                                            messages=[{"role": "user", "content": "x"}])
    text, finish = "", None
    try:
        for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
                finish = c.choices[0].finish_reason or finish
    except openai.APIError as e:
        assert "Too many requests" in str(e) or "throttl" in str(e).lower(), str(e)
    else:
        raise AssertionError(f"the stream ended without an error (text {text!r}, finish {finish!r})")
    assert finish is None, finish
    assert text == "Bonjour ", text


@per_backend
def embeddings_on_a_bedrock_model_are_refused(model, _throttle, _stream_throttle):
    try:
        client.embeddings.create(model=model, input=["alpha"])
    except openai.BadRequestError as e:
        assert e.status_code == 400
    else:
        raise AssertionError("expected BadRequestError")


run()
