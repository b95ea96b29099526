"""The official OpenAI Python SDK against a Switchyard route served by an Anthropic backend.

Env: SWITCHYARD_URL, SWITCHYARD_KEY, SWITCHYARD_MODEL. Prints 'N passed, N failed'.
"""
import json
import os

import openai

from harness import check, run

client = openai.OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"],
                       max_retries=0, timeout=20)
MODEL = os.environ["SWITCHYARD_MODEL"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]


@check
def chat_text():
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                                                             {"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == "Bonjour from fake Claude", r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 14 and r.usage.completion_tokens == 7, r.usage
    assert r.usage.prompt_tokens_details.cached_tokens == 3


@check
def chat_tools():
    r = client.chat.completions.create(model=MODEL, tools=TOOLS, tool_choice="auto",
                                       messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls"


@check
def chat_stream_text_with_usage():
    stream = client.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hello"}])
    text, finish, usage = "", None, None
    for c in stream:
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
        if c.usage:
            usage = c.usage
    assert text == "Bonjour from fake Claude", text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 9, usage


@check
def chat_stream_tool_call():
    stream = client.chat.completions.create(model=MODEL, stream=True, tools=TOOLS,
                                            messages=[{"role": "user", "content": "Weather in Paris?"}])
    args, name, finish = "", None, None
    for c in stream:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert name == "get_weather" and json.loads(args) == {"location": "Paris"}, (name, args)
    assert finish == "tool_calls"


@check
def anthropic_overloaded_maps_to_openai_error():
    body = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-fake-mode": "raw", "x-fake-status": "529", "x-fake-body": body})
    except openai.APIStatusError as e:
        assert e.status_code == 529
        assert "Overloaded" in str(e)
    else:
        raise AssertionError("expected an APIStatusError")


@check
def unsupported_field_is_rejected_naming_it():
    try:
        client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "x"}])
    except openai.BadRequestError as e:
        assert "`n`" in str(e), str(e)
    else:
        raise AssertionError("expected BadRequestError")



run()
