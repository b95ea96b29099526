"""The official Anthropic Python SDK against Switchyard routes served by AWS Bedrock backends (the scripted
stand-in tests/sdk/bedrock_standin.py behind them): a Converse backend (answers translated) and an
InvokeModel backend (Anthropic Messages body, `anthropic_version: bedrock-2023-05-31`). Every check runs
once per backend kind.

Env: SWITCHYARD_URL (gateway base), SWITCHYARD_KEY, and the gateway model names (defaults in brackets):
BEDROCK_CONVERSE_MODEL [bedrock-converse], BEDROCK_INVOKE_MODEL [bedrock-claude], BEDROCK_THROTTLE_MODEL
[bedrock-throttle], BEDROCK_INVOKE_THROTTLE_MODEL [bedrock-claude-throttle], BEDROCK_STREAM_THROTTLE_MODEL
[bedrock-stream-throttle], BEDROCK_INVOKE_STREAM_THROTTLE_MODEL [bedrock-claude-stream-throttle]. Prints one
line per check and 'N passed, N failed'.

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
last user message holds no tool result; with thinking enabled a thinking block first (signature
`standin-signature`); usage input 11, output 7, cache read 3, cache write 0; count-tokens N = 5 + the
words of all texts (so "Be brief." + "Hello" -> 8), for a Converse input and an InvokeModel body alike.
"""
import os

import anthropic

from harness import check, run

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key=os.environ["SWITCHYARD_KEY"],
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
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
QUESTION = {"role": "user", "content": "Weather in Paris?"}


def per_backend(fn):
    """Registers fn once per backend kind, as `name[kind]`, called with (model, throttle, stream_throttle)."""
    for kind, model, throttle, stream_throttle in BACKENDS:
        def bound(fn=fn, args=(model, throttle, stream_throttle)):
            fn(*args)
        bound.__name__ = f"{fn.__name__}[{kind}]"
        check(bound)
    return fn


def texts(message):
    return "".join(b.text for b in message.content if b.type == "text")


@per_backend
def messages_create_text_and_usage(model, _throttle, _stream_throttle):
    m = client.messages.create(model=model, max_tokens=100, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello"}])
    assert m.type == "message" and m.role == "assistant"
    assert texts(m) == f"{TEXT}. You said: Hello", m.content
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens == 11 and m.usage.output_tokens == 7, m.usage
    assert m.usage.cache_read_input_tokens == 3, m.usage


@per_backend
def messages_create_tool_use_and_tool_result_round_trip(model, _throttle, _stream_throttle):
    m = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=[QUESTION])
    assert m.stop_reason == "tool_use", m.stop_reason
    uses = [b for b in m.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"location": "Paris"}, m.content
    assert uses[0].id
    follow = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=[
        QUESTION,
        {"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": "get_weather",
                                           "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C and sunny"}]},
    ])
    assert follow.stop_reason == "end_turn", follow.stop_reason
    assert texts(follow) == f"{TEXT}. You said: 18C and sunny", follow.content


@per_backend
def messages_create_with_thinking_returns_thinking_block_first(model, _throttle, _stream_throttle):
    m = client.messages.create(model=model, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": "Think"}])
    assert m.content[0].type == "thinking", m.content
    assert m.content[0].thinking == "Let me think about this." and m.content[0].signature == "standin-signature"
    assert texts(m) == f"{TEXT}. You said: Think", m.content


@per_backend
def messages_stream_text_and_final_usage(model, _throttle, _stream_throttle):
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == f"{TEXT}. You said: Hi", pieces
    assert len(pieces) >= 2, pieces
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens == 7, final.usage
    assert final.usage.input_tokens == 11, final.usage


@per_backend
def messages_stream_tool_use(model, _throttle, _stream_throttle):
    with client.messages.stream(model=model, max_tokens=100, tools=TOOLS, messages=[QUESTION]) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"location": "Paris"}, final.content
    assert final.stop_reason == "tool_use", final.stop_reason


@per_backend
def count_tokens(model, _throttle, _stream_throttle):
    r = client.messages.count_tokens(model=model, system="Be brief.", messages=[{"role": "user", "content": "Hello"}])
    assert r.input_tokens == 8, r


@per_backend
def upstream_throttling_is_rate_limit_error(_model, throttle, _stream_throttle):
    try:
        client.messages.create(model=throttle, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
        assert "Too many requests" in str(e), str(e)
        assert e.body["type"] == "error" and e.body["error"]["type"] == "rate_limit_error", e.body
    else:
        raise AssertionError("expected RateLimitError")


@per_backend
def mid_stream_throttling_exception_raises(_model, _throttle, stream_throttle):
    pieces = []
    try:
        with client.messages.stream(model=stream_throttle, max_tokens=100,
                                    messages=[{"role": "user", "content": "x"}]) as stream:
            for piece in stream.text_stream:
                pieces.append(piece)
            stream.get_final_message()
    except anthropic.APIError as e:
        assert "Too many requests" in str(e) or "throttl" in str(e).lower(), str(e)
    else:
        raise AssertionError(f"the stream ended without an error: {pieces}")
    assert "".join(pieces) == "Bonjour ", pieces


run()
