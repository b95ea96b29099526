"""The Bedrock stand-in (bedrock_standin.py) against the real AWS SDK for Python (boto3 / botocore).

boto3 signs every request with SigV4 and decodes and CRC-checks the event streams, so what passes here is
what the real service would accept and send. Also checks raw requests signed by an independent SigV4
implementation below (canonical URI encoded twice is accepted, once is refused).

Starts its own stand-in (this venv's python, piped stdin) unless STANDIN_URL names a running one. Prints
one line per check and 'N passed, N failed'; exits non-zero on any failure.
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import boto3
import botocore.exceptions
from botocore.config import Config

from harness import check, run

HERE = os.path.dirname(os.path.abspath(__file__))
AKID, SECRET, TOKEN, REGION = "AKIDSTANDIN", "standin/secret/key", "standin-session-token", "us-east-1"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
TEXT = "Bonjour from fake Bedrock"
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city", "inputSchema": {
    "json": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}}]}
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"location": {"type": "string"}}}}]


def start_standin():
    if os.environ.get("STANDIN_URL"):
        return None, os.environ["STANDIN_URL"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "bedrock_standin.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"the stand-in said {line!r}"
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


PROC, URL = start_standin()
HOSTPORT = urllib.parse.urlsplit(URL).netloc


def client_with(secret=SECRET, token=TOKEN):
    return boto3.client("bedrock-runtime", endpoint_url=URL, region_name=REGION, aws_access_key_id=AKID,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=20))


client = client_with()


def control(method, path):
    req = urllib.request.Request(URL + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def user(text):
    return {"role": "user", "content": [{"text": text}]}


def anthropic_body(**extra):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hello"}]}
    body.update(extra)
    return json.dumps(body)


def error_of(call):
    """The ClientError a call raises (AssertionError when it succeeds)."""
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e
    raise AssertionError("expected a ClientError")


# ---------------------------------------------------------------------------------------------
# An independent SigV4 signer, for raw requests
# ---------------------------------------------------------------------------------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_raw(method, raw_path, body, amz_date, canonical_path=None, secret=SECRET, content_sha=None):
    """Headers for a request signed with SigV4. `canonical_path` defaults to the raw path percent-encoded
    once more (every character but unreserved ones and `/`), which is what AWS expects."""
    canonical_path = canonical_path or urllib.parse.quote(raw_path, safe="/~")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": HOSTPORT, "content-type": "application/json", "x-amz-date": amz_date,
               "x-amz-security-token": TOKEN, "x-amz-content-sha256": content_sha or payload_hash}
    names = sorted(headers)
    canonical = "\n".join([method, canonical_path, "", "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), payload_hash])
    scope = f"{amz_date[:8]}/{REGION}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), amz_date[:8]), REGION), "bedrock"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders={';'.join(names)}, "
                                f"Signature={signature}")
    return headers


def now_stamp(offset_seconds=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return t.strftime("%Y%m%dT%H%M%SZ")


def raw_post(raw_path, body, headers, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOSTPORT, timeout=10)
    conn.request("POST", raw_path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


def converse_path(model_id, op="converse"):
    return f"/model/{urllib.parse.quote(model_id, safe='')}/{op}"


# ---------------------------------------------------------------------------------------------
# Converse
# ---------------------------------------------------------------------------------------------

@check
def converse_text_with_colon_model_id():
    r = client.converse(modelId=HAIKU, messages=[user("Hello")], inferenceConfig={"maxTokens": 50})
    assert r["output"]["message"]["content"] == [{"text": f"{TEXT}. You said: Hello"}], r["output"]
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18,
                          "cacheReadInputTokens": 3, "cacheWriteInputTokens": 0}, r["usage"]
    assert r["metrics"]["latencyMs"] == 42


@check
def converse_with_arn_model_id_verifies_and_arrives_encoded_once():
    control("POST", "/_reset")
    r = client.converse(modelId=ARN, messages=[user("Hi")], system=[{"text": "Be brief."}])
    assert r["output"]["message"]["content"][0]["text"] == f"{TEXT}. You said: Hi"
    rec = control("GET", "/_requests")[-1]
    assert rec["path"] == ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
                           "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"), rec["path"]
    assert rec["model_id"] == ARN and rec["signature_ok"] and rec["status"] == 200, rec
    assert rec["body"]["system"] == [{"text": "Be brief."}]
    assert "modelId" not in rec["body"]
    assert {"x-amz-date", "x-amz-security-token", "authorization"} <= set(rec["headers"]), rec["headers"]


@check
def converse_tool_call_then_tool_result_round_trip():
    r = client.converse(modelId=HAIKU, messages=[user("Weather in Paris?")], toolConfig=TOOLS)
    assert r["stopReason"] == "tool_use"
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert use["name"] == "get_weather" and use["input"] == {"location": "Paris"}, use
    follow = client.converse(modelId=HAIKU, toolConfig=TOOLS, messages=[
        user("Weather in Paris?"), r["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"],
                                                     "content": [{"text": "18C and sunny"}]}}]}])
    assert follow["stopReason"] == "end_turn"
    assert follow["output"]["message"]["content"] == [{"text": f"{TEXT}. You said: 18C and sunny"}]


@check
def converse_with_thinking_puts_reasoning_first():
    r = client.converse(modelId=HAIKU, messages=[user("Think")],
                        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}})
    first, second = r["output"]["message"]["content"]
    assert first["reasoningContent"]["reasoningText"] == {"text": "Let me think about this.",
                                                          "signature": "standin-signature"}, first
    assert second["text"].startswith(TEXT)


@check
def converse_refuses_conversation_starting_with_assistant():
    e = error_of(lambda: client.converse(modelId=HAIKU, messages=[
        {"role": "assistant", "content": [{"text": "x"}]}, user("y")]))
    assert e.response["Error"]["Code"] == "ValidationException", e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@check
def converse_refuses_consecutive_user_messages():
    e = error_of(lambda: client.converse(modelId=HAIKU, messages=[user("a"), user("b")]))
    assert "alternate" in e.response["Error"]["Message"], e.response


@check
def converse_refuses_unknown_body_key():
    body = json.dumps({"messages": [user("hi")], "max_tokens": 5}).encode()
    path = converse_path(HAIKU)
    status, headers, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp()))
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException:"), (status, data)
    assert b"max_tokens" in data, data


# ---------------------------------------------------------------------------------------------
# ConverseStream
# ---------------------------------------------------------------------------------------------

def stream_events(response_stream):
    return [event for event in response_stream]


@check
def converse_stream_text_decodes_and_accumulates():
    events = stream_events(client.converse_stream(modelId=HAIKU, messages=[user("Hello")])["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"], kinds
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert len(deltas) == 3 and "".join(deltas) == f"{TEXT}. You said: Hello", deltas
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 7
    assert events[-1]["metadata"]["metrics"]["latencyMs"] == 42


@check
def converse_stream_tool_use_input_arrives_in_pieces():
    events = stream_events(client.converse_stream(modelId=ARN, messages=[user("Weather?")], toolConfig=TOOLS)["stream"])
    start = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert start[0]["start"]["toolUse"]["name"] == "get_weather", start
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert len(pieces) == 3 and json.loads("".join(pieces)) == {"location": "Paris"}, pieces
    assert [e for e in events if "messageStop" in e][0]["messageStop"]["stopReason"] == "tool_use"


@check
def converse_stream_reasoning_text_then_signature():
    events = stream_events(client.converse_stream(
        modelId=HAIKU, messages=[user("Hi")],
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}})["stream"])
    reasoning = [e["contentBlockDelta"]["delta"]["reasoningContent"] for e in events
                 if "reasoningContent" in e.get("contentBlockDelta", {}).get("delta", {})]
    assert "".join(r.get("text", "") for r in reasoning) == "Let me think about this."
    assert reasoning[-1] == {"signature": "standin-signature"}, reasoning
    texts = [e["contentBlockDelta"] for e in events if "text" in e.get("contentBlockDelta", {}).get("delta", {})]
    assert texts and all(t["contentBlockIndex"] == 1 for t in texts)


@check
def converse_stream_throttling_exception_midway_raises():
    seen = []
    try:
        for event in client.converse_stream(modelId="standin-stream-throttle", messages=[user("x")])["stream"]:
            seen.append(event)
    except botocore.exceptions.EventStreamError as e:
        assert e.response["Error"]["Code"] == "throttlingException", e.response
        assert "Too many requests" in e.response["Error"]["Message"]
    else:
        raise AssertionError(f"the stream ended without the exception: {seen}")
    assert [next(iter(e)) for e in seen] == ["messageStart", "contentBlockDelta"], seen


@check
def stream_throttle_model_answers_normally_without_streaming():
    r = client.converse(modelId="standin-stream-throttle", messages=[user("x")])
    assert r["stopReason"] == "end_turn"


# ---------------------------------------------------------------------------------------------
# InvokeModel (Anthropic Messages body)
# ---------------------------------------------------------------------------------------------

@check
def invoke_model_anthropic_text():
    r = client.invoke_model(modelId=HAIKU, body=anthropic_body(system="Be brief."),
                            contentType="application/json", accept="application/json")
    m = json.loads(r["body"].read())
    assert m["type"] == "message" and m["role"] == "assistant"
    assert m["content"] == [{"type": "text", "text": f"{TEXT}. You said: Hello"}], m["content"]
    assert m["stop_reason"] == "end_turn"
    assert m["usage"] == {"input_tokens": 11, "output_tokens": 7, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 3}, m["usage"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"] == "7"


@check
def invoke_model_tool_use_and_tool_result_round_trip():
    r = json.loads(client.invoke_model(modelId=ARN, body=anthropic_body(tools=ANTHROPIC_TOOLS))["body"].read())
    assert r["stop_reason"] == "tool_use"
    use = r["content"][0]
    assert use["type"] == "tool_use" and use["name"] == "get_weather" and use["input"] == {"location": "Paris"}
    follow = json.loads(client.invoke_model(modelId=ARN, body=anthropic_body(tools=ANTHROPIC_TOOLS, messages=[
        {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": [use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "18C and sunny"}]},
    ]))["body"].read())
    assert follow["content"][0]["text"] == f"{TEXT}. You said: 18C and sunny", follow


@check
def invoke_model_refuses_model_stream_and_missing_version():
    for bad in (anthropic_body(model="claude"), anthropic_body(stream=True),
                json.dumps({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
                anthropic_body(anthropic_version="2023-06-01")):
        e = error_of(lambda: client.invoke_model(modelId=HAIKU, body=bad))
        assert e.response["Error"]["Code"] == "ValidationException", e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@check
def invoke_model_with_response_stream_chunks_are_anthropic_events():
    r = client.invoke_model_with_response_stream(modelId=HAIKU, body=anthropic_body())
    assert r["contentType"] == "application/json"
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    kinds = [e["type"] for e in events]
    assert kinds == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"], kinds
    assert "model" in events[0]["message"] and events[0]["message"]["usage"]["input_tokens"] == 11
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == f"{TEXT}. You said: Hello", text
    assert events[-2]["delta"]["stop_reason"] == "end_turn" and events[-2]["usage"]["output_tokens"] == 7
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == 11 and metrics["outputTokenCount"] == 7, metrics


@check
def invoke_stream_tool_use_and_thinking():
    r = client.invoke_model_with_response_stream(modelId=ARN, body=anthropic_body(
        tools=ANTHROPIC_TOOLS, thinking={"type": "enabled", "budget_tokens": 1024}))
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "tool_use"], starts
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert [d for d in deltas if d["type"] == "signature_delta"] == [
        {"type": "signature_delta", "signature": "standin-signature"}]
    args = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(args) == {"location": "Paris"}, args
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


@check
def invoke_stream_throttling_exception_midway_raises():
    seen = []
    try:
        for e in client.invoke_model_with_response_stream(modelId="standin-stream-throttle", body=anthropic_body())["body"]:
            seen.append(json.loads(e["chunk"]["bytes"])["type"])
    except botocore.exceptions.EventStreamError as e:
        assert e.response["Error"]["Code"] == "throttlingException", e.response
    else:
        raise AssertionError(f"the stream ended without the exception: {seen}")
    assert seen == ["message_start", "content_block_start", "content_block_delta"], seen


# ---------------------------------------------------------------------------------------------
# CountTokens
# ---------------------------------------------------------------------------------------------

@check
def count_tokens_converse_and_invoke_model_inputs():
    r = client.count_tokens(modelId=HAIKU, input={"converse": {
        "messages": [user("Hello there")], "system": [{"text": "Be brief."}]}})
    assert r["inputTokens"] == 5 + 4, r
    r = client.count_tokens(modelId=HAIKU, input={"invokeModel": {"body": anthropic_body(system="Be brief.").encode()}})
    assert r["inputTokens"] == 5 + 3, r
    rec = control("GET", "/_requests")[-1]
    encoded = rec["body"]["input"]["invokeModel"]["body"]
    assert json.loads(base64.b64decode(encoded))["anthropic_version"] == "bedrock-2023-05-31", rec["body"]


@check
def count_tokens_invoke_model_body_must_be_base64():
    body = json.dumps({"input": {"invokeModel": {"body": anthropic_body()}}}).encode()
    path = converse_path(HAIKU, "count-tokens")
    status, _, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp()))
    assert status == 400 and b"base64" in data, (status, data)


# ---------------------------------------------------------------------------------------------
# Scripted errors
# ---------------------------------------------------------------------------------------------

@check
def throttle_model_is_429_throttling_exception():
    try:
        client.converse(modelId="standin-throttle", messages=[user("x")])
    except client.exceptions.ThrottlingException as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert e.response["Error"]["Message"] == "Too many requests, please wait before trying again."
    else:
        raise AssertionError("expected ThrottlingException")
    e = error_of(lambda: client.invoke_model(modelId="standin-throttle", body=anthropic_body()))
    assert e.response["Error"]["Code"] == "ThrottlingException"


@check
def other_scripted_errors_map_to_their_aws_exceptions():
    for model, status, code in (("standin-invalid", 400, "ValidationException"),
                                ("standin-denied", 403, "AccessDeniedException"),
                                ("standin-model-error", 424, "ModelErrorException"),
                                ("standin-unavailable", 503, "ServiceUnavailableException")):
        e = error_of(lambda: client.converse(modelId=model, messages=[user("x")]))
        assert e.response["Error"]["Code"] == code, (model, e.response)
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == status
        e = error_of(lambda: client.converse_stream(modelId=model, messages=[user("x")]))
        assert e.response["Error"]["Code"] == code, (model, e.response)


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------

@check
def wrong_secret_is_refused_with_invalid_signature():
    e = error_of(lambda: client_with(secret="not-the-secret").converse(modelId=HAIKU, messages=[user("x")]))
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response
    assert "does not match" in e.response["Error"]["Message"]
    assert control("GET", "/_requests")[-1]["signature_ok"] is False


@check
def wrong_session_token_is_refused():
    e = error_of(lambda: client_with(token="other-token").converse(modelId=ARN, messages=[user("x")]))
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.response["Error"]["Code"] == "UnrecognizedClientException", e.response


@check
def independent_signer_agrees_canonical_uri_is_encoded_twice():
    body = json.dumps({"messages": [user("raw")]}).encode()
    for model in (HAIKU, ARN):
        path = converse_path(model)
        assert "%3A" in path and ("%2F" in path) == (model == ARN)
        status, _, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp()))
        assert status == 200, (model, status, data)
        # A signer that uses the raw path as the canonical URI (no second encoding) is refused.
        status, headers, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp(), canonical_path=path))
        assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException:"), (status, data)
        assert "%253A" in json.loads(data)["message"], data


@check
def content_sha256_mismatch_and_stale_date_are_refused():
    body = json.dumps({"messages": [user("raw")]}).encode()
    path = converse_path(HAIKU)
    status, _, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp(), content_sha="0" * 64))
    assert status == 403 and b"x-amz-content-sha256" in data, (status, data)
    status, _, data = raw_post(path, body, sign_raw("POST", path, body, now_stamp(-3600)))
    assert status == 403 and b"Signature expired" in data, (status, data)
    status, _, data = raw_post(path, body, {"content-type": "application/json"})
    assert status == 403 and b"Missing Authentication Token" in data, (status, data)


@check
def keep_alive_connection_serves_several_signed_requests():
    conn = http.client.HTTPConnection(HOSTPORT, timeout=10)
    body = json.dumps({"messages": [user("again")]}).encode()
    for _ in range(3):
        path = converse_path(HAIKU)
        status, headers, _ = raw_post(path, body, sign_raw("POST", path, body, now_stamp()), conn)
        assert status == 200 and headers.get("connection", "").lower() != "close", headers
    conn.close()


@check
def chunked_request_body_is_read_and_verified():
    body = json.dumps({"messages": [user("chunked")]}).encode()
    path = converse_path(HAIKU)
    headers = sign_raw("POST", path, body, now_stamp())
    headers["transfer-encoding"] = "chunked"
    conn = http.client.HTTPConnection(HOSTPORT, timeout=10)
    conn.request("POST", path, body=iter([body[:10], body[10:]]), headers=headers, encode_chunked=True)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200 and b"chunked" in data, (resp.status, data)


@check
def recorded_requests_and_reset():
    control("POST", "/_reset")
    client.converse(modelId=HAIKU, messages=[user("one")])
    recs = control("GET", "/_requests")
    assert len(recs) == 1 and recs[0]["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", recs
    assert recs[0]["operation"] == "converse" and recs[0]["body"]["messages"][0]["content"][0]["text"] == "one"
    control("POST", "/_reset")
    assert control("GET", "/_requests") == []


try:
    run()
finally:
    if PROC is not None:
        PROC.stdin.close()
        PROC.wait(timeout=10)
