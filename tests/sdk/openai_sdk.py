"""The official OpenAI Python SDK against a running Switchyard.

Run by tests/sdk.rs with SWITCHYARD_URL (gateway base, no /v1) and SWITCHYARD_KEY set. Prints one line
per check and a closing 'N passed, N failed' line; exits non-zero on any failure.
"""
import os

import openai

from harness import check, run

BASE = os.environ["SWITCHYARD_URL"] + "/v1"
KEY = os.environ["SWITCHYARD_KEY"]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=20)


@check
def chat_non_streaming_via_mock():
    r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "ping pong"}])
    assert r.object == "chat.completion"
    assert "You said: ping pong" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check
def chat_non_streaming_via_openai_compatible_upstream():
    r = client.chat.completions.create(model="fake-1", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"vendor_field": {"a": 1}})
    assert r.choices[0].message.content == "fake reply"
    assert r.usage.total_tokens == 7


@check
def chat_streaming_via_mock():
    stream = client.chat.completions.create(model="demo", stream=True,
                                            messages=[{"role": "user", "content": "stream me"}])
    parts = []
    finish = None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    text = "".join(parts)
    assert "You said: stream me" in text, text
    assert finish == "stop"


@check
def chat_streaming_via_upstream_with_usage():
    stream = client.chat.completions.create(model="demo", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "count"}])
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
    assert usage is not None and usage.completion_tokens > 0


@check
def chat_streaming_through_fake_upstream():
    stream = client.chat.completions.create(model="fake-1", stream=True, messages=[{"role": "user", "content": "x"}],
                                            extra_headers={"x-fake-mode": "sse", "x-fake-events": "4"})
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text.count("tok") == 4, text


@check
def completions_non_streaming_and_streaming():
    r = client.completions.create(model="demo", prompt="once upon")
    assert "once upon" in r.choices[0].text
    text = "".join(c.choices[0].text for c in client.completions.create(model="demo", prompt="a time", stream=True))
    assert "a time" in text


@check
def embeddings_default_base64_encoding_decodes():
    r = client.embeddings.create(model="demo", input=["alpha", "beta"])
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 16
    assert abs(sum(x * x for x in r.data[0].embedding) - 1.0) < 1e-3


@check
def models_list():
    ids = [m.id for m in client.models.list()]
    assert "demo" in ids, ids


@check
def unknown_model_raises_not_found():
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404
        assert e.code == "model_not_found", e.body
    else:
        raise AssertionError("expected NotFoundError")


@check
def wrong_key_raises_authentication_error():
    bad = openai.OpenAI(base_url=BASE, api_key="wrong", max_retries=0)
    try:
        bad.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    else:
        raise AssertionError("expected AuthenticationError")


@check
def upstream_rate_limit_error_passes_through():
    try:
        client.chat.completions.create(
            model="fake-1", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-mode": "raw", "x-fake-status": "429",
                           "x-fake-body": '{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limited"}}'})
    except openai.RateLimitError as e:
        assert "slow down" in str(e)
    else:
        raise AssertionError("expected RateLimitError")


@check
def request_id_header_is_returned():
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert raw.headers.get("x-request-id")



run()
