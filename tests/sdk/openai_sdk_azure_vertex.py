"""The official OpenAI Python SDK against Switchyard routes served by Azure OpenAI deployments (an `api-key`
backend and an Entra ID backend) and by Claude on Vertex AI (`vertex_anthropic`, translated), with the
scripted stand-in tests/sdk/google_azure_standin.py behind them.

Env: SWITCHYARD_URL (gateway base, no /v1), SWITCHYARD_KEY. Gateway models (tests/google_azure.rs's config):
azure-gpt, azure-entra (deployment gpt-4o-prod), azure-filtered (a prompt Azure's content filter refuses:
400 content_filter), azure-filtered-output (finish_reason content_filter), azure-throttle (429, retry-after
2), azure-embedding, azure-instruct (completions), vertex-claude (Claude through rawPredict), vertex-claude-
throttle (Vertex's 429 RESOURCE_EXHAUSTED). Prints one line per check and 'N passed, N failed'.

What the stand-in answers: `Bonjour from Azure stand-in. You said: <last user text>` (Vertex: `Bonjour from
Vertex Claude stand-in. You said: …`); a call of the first tool with {"location": "Paris"} when tools are
offered and the last message is no tool result; usage 11 in, 7 out.
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
CHAT_MODELS = [("azure-gpt", "Azure"), ("azure-entra", "Azure"), ("vertex-claude", "Vertex Claude")]


def per_model(fn):
    for model, label in CHAT_MODELS:
        def bound(fn=fn, model=model, label=label):
            fn(model, label)
        bound.__name__ = f"{fn.__name__}[{model}]"
        check(bound)
    return fn


@per_model
def chat(model, label):
    r = client.chat.completions.create(model=model, max_tokens=50, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == f"Bonjour from {label} stand-in. You said: Hello", r
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7), r.usage


@per_model
def stream(model, label):
    chunks = list(client.chat.completions.create(model=model, max_tokens=50, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Hello"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Bonjour from {label} stand-in. You said: Hello", text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7, chunks[-1]


@per_model
def tools_round_trip(model, label):
    r = client.chat.completions.create(model=model, max_tokens=50, messages=[QUESTION], tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls", r
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    r = client.chat.completions.create(model=model, max_tokens=50, tools=TOOLS, messages=[
        QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"}])
    assert r.choices[0].finish_reason == "stop", r
    assert r.choices[0].message.content.startswith(f"Bonjour from {label} stand-in"), r


@per_model
def streamed_tool_call(model, label):
    chunks = list(client.chat.completions.create(model=model, max_tokens=50, stream=True, messages=[QUESTION],
                                                 tools=TOOLS))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or [])
    names = [tc.function.name for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []
             if tc.function and tc.function.name]
    assert names == ["get_weather"] and json.loads(args) == {"location": "Paris"}, (names, args)


@check
def azure_content_filter_results_pass_through():
    r = client.chat.completions.create(model="azure-gpt", messages=[{"role": "user", "content": "Hello"}])
    extra = r.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"]["violence"]["filtered"] is False, extra
    assert r.choices[0].model_extra["content_filter_results"]["hate"]["severity"] == "safe"
    chunks = list(client.chat.completions.create(model="azure-gpt", stream=True,
                                                 messages=[{"role": "user", "content": "Hello"}]))
    assert any((c.model_extra or {}).get("prompt_filter_results") for c in chunks), "the first chunk's filter results"


@check
def azure_filtered_output_finishes_with_content_filter():
    r = client.chat.completions.create(model="azure-filtered-output", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].finish_reason == "content_filter", r
    assert r.choices[0].model_extra["content_filter_results"]["violence"]["filtered"] is True


@check
def azure_filtered_prompt_is_a_400_bad_request():
    try:
        client.chat.completions.create(model="azure-filtered", messages=[{"role": "user", "content": "x"}])
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.code == "content_filter", (e.status_code, e.code)
        assert "content management policy" in e.message, e.message
        assert e.body["innererror"]["code"] == "ResponsibleAIPolicyViolation", e.body
    else:
        raise AssertionError("a filtered prompt must fail")


@check
def azure_throttle_is_a_rate_limit_error_with_retry_after():
    try:
        client.chat.completions.create(model="azure-throttle", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429 and e.response.headers.get("retry-after") == "2", e.response.headers
        assert "exceeded token rate limit" in e.message, e.message
    else:
        raise AssertionError("a throttled deployment must fail")


@check
def vertex_quota_error_is_a_rate_limit_error():
    try:
        client.chat.completions.create(model="vertex-claude-throttle", max_tokens=10,
                                       messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as e:
        assert "RESOURCE_EXHAUSTED" in e.message and "Quota exceeded" in e.message, e.message
    else:
        raise AssertionError("a throttled model must fail")


@check
def azure_embeddings():
    r = client.embeddings.create(model="azure-embedding", input=["alpha", "beta"])
    assert [d.index for d in r.data] == [0, 1] and r.data[1].embedding[0] == 1.1, r
    assert r.usage.prompt_tokens == 4


@check
def azure_completions():
    r = client.completions.create(model="azure-instruct", prompt="Say hello", max_tokens=10)
    assert r.choices[0].text == " Bonjour from Azure stand-in.", r


@check
def vertex_claude_has_no_embeddings():
    try:
        client.embeddings.create(model="vertex-claude", input="x")
    except openai.BadRequestError as e:
        assert "not supported" in e.message, e.message
    else:
        raise AssertionError("embeddings on Claude must fail")


run()
