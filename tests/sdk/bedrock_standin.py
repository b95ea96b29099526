"""A scripted stand-in for the AWS Bedrock runtime API, for the gateway's tests.

A threaded HTTP/1.1 server (keep-alive; JSON answers with Content-Length, event streams chunked) on
127.0.0.1. It prints `PORT <n>` as its first stdout line and runs until its stdin closes (start it with a
piped stdin and keep the pipe open; `--no-stdin` ignores stdin) or it is killed.

    python bedrock_standin.py [--port N] [--no-stdin]

Every request except the control endpoints must carry a valid SigV4 signature (service `bedrock`). The
stand-in verifies it with botocore: it rebuilds an AWSRequest from what arrived (method,
`http://{Host}{raw path}`, the headers named in SignedHeaders, the body) and re-signs it with
botocore.auth.SigV4Auth at the request's own x-amz-date. botocore percent-encodes the already-encoded
path once more for the canonical URI (`v1%3A0` -> `v1%253A0`), as AWS does for every service but S3.
Credentials (env, with defaults): STANDIN_ACCESS_KEY_ID=AKIDSTANDIN, STANDIN_SECRET=standin/secret/key,
STANDIN_SESSION_TOKEN=standin-session-token, STANDIN_REGION=us-east-1. STANDIN_MAX_SKEW_SECONDS (default
900, 0 = off) bounds how far x-amz-date may be from now. STANDIN_STREAM_DELAY_MS (default 5) is the pause
between the writes of an event stream. STANDIN_LAX=1 turns off the Converse shape validation.

Signature rejections (all 403, JSON `{"message": ...}`, header `x-amzn-ErrorType: <Type>:http://...`):
  no Authorization header                      MissingAuthenticationTokenException
  malformed Authorization / missing x-amz-date IncompleteSignatureException
  unknown access key id, wrong/missing token   UnrecognizedClientException
  x-amz-content-sha256 differs from the body   InvalidSignatureException
  host or x-amz-date not in SignedHeaders      InvalidSignatureException
  wrong scope (date, region, service)          InvalidSignatureException
  x-amz-date further than the skew from now    InvalidSignatureException ("Signature expired: ...")
  signature differs                            InvalidSignatureException ("The request signature we
                                               calculated does not match ...", with the canonical request
                                               and string to sign the stand-in expected)

Control endpoints (unsigned): `GET /_requests` -> JSON list of the recorded requests, oldest first, each
`{"method", "path" (raw), "headers" (lower-case names), "body" (parsed JSON or null), "body_text",
"model_id" (decoded), "operation", "signature_ok", "status"}`; `POST /_reset` clears the list.

Operations: `POST /model/{modelId}/converse | converse-stream | invoke | invoke-with-response-stream |
count-tokens`; the modelId path segment is percent-encoded once (`:` as %3A, `/` as %2F). Anything else:
404 UnknownOperationException.

Script, by the decoded model id (first match wins):
  contains `stream-throttle`  converse-stream / invoke-with-response-stream: messageStart (invoke:
                              message_start + content_block_start) and one text delta, then an exception
                              frame (`:message-type: exception`, `:exception-type: throttlingException`)
                              and the connection closes. The other operations answer normally.
  contains `throttle`         429 ThrottlingException "Too many requests, please wait before trying again."
  contains `invalid`          400 ValidationException "Malformed input request: ..."
  contains `denied`           403 AccessDeniedException
  contains `model-error`      424 ModelErrorException
  contains `unavailable`      503 ServiceUnavailableException
  anything else               a normal answer:
    - tools offered (Converse `toolConfig.tools`, Anthropic `tools`) and the last user message holds no
      tool result: a tool call of the first tool with input {"location": "Paris"}, stop reason tool_use
      (Converse toolUseId `tooluse_standin_01`, Anthropic id `toolu_standin_01`);
    - otherwise the text `Bonjour from fake Bedrock`, followed by `. You said: <echo>` when the last user
      message has text (its text blocks, or the text of its tool results, joined by a space), stop reason
      end_turn;
    - thinking enabled (Converse `additionalModelRequestFields.thinking.type == "enabled"`, Anthropic
      `thinking.type == "enabled"`): a reasoning block first, text `Let me think about this.`, signature
      `standin-signature`.
    Usage: Converse {inputTokens 11, outputTokens 7, totalTokens 18, cacheReadInputTokens 3,
    cacheWriteInputTokens 0}, metrics {latencyMs 42}; Anthropic {input_tokens 11, output_tokens 7,
    cache_read_input_tokens 3, cache_creation_input_tokens 0} (message_start in a stream says
    output_tokens 1, message_delta says 7; message_stop carries `amazon-bedrock-invocationMetrics`).
    Streams: text in 3 deltas (`Bonjour from `, `fake Bedrock`, the rest), tool input JSON in 3 pieces,
    reasoning as two text deltas then a signature delta. Every event payload also carries a padding field
    `p` like real Bedrock. Frames are written with pauses and split across writes.
  count-tokens                `{"inputTokens": N}`, N = 5 + the number of whitespace-separated words in
                              every `text` string, string `content` and string `system` of the input
                              (Converse input `{"input": {"converse": {...}}}`, or InvokeModel input
                              `{"input": {"invokeModel": {"body": "<base64 of the Anthropic JSON body>"}}}`).

Validation (400 ValidationException, like Bedrock):
  - Converse / ConverseStream / count-tokens converse: the body must fit botocore's Converse input shape
    (unknown keys are refused); the first message must be from the user; roles must alternate; no empty
    content lists; no blank text blocks.
  - InvokeModel (+ stream, count-tokens invokeModel): JSON object with `anthropic_version` equal to
    `bedrock-2023-05-31`, no `model`, no `stream`, a `messages` list, and (not for count-tokens)
    `max_tokens`.
"""
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import re
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

ACCESS_KEY_ID = os.environ.get("STANDIN_ACCESS_KEY_ID", "AKIDSTANDIN")
SECRET = os.environ.get("STANDIN_SECRET", "standin/secret/key")
SESSION_TOKEN = os.environ.get("STANDIN_SESSION_TOKEN", "standin-session-token")
REGION = os.environ.get("STANDIN_REGION", "us-east-1")
SERVICE = "bedrock"
MAX_SKEW_SECONDS = int(os.environ.get("STANDIN_MAX_SKEW_SECONDS", "900"))
STREAM_DELAY = int(os.environ.get("STANDIN_STREAM_DELAY_MS", "5")) / 1000.0
LAX = os.environ.get("STANDIN_LAX") == "1"

ANTHROPIC_VERSION = "bedrock-2023-05-31"
TEXT_HEAD = "Bonjour from fake Bedrock"
REASONING_TEXT = "Let me think about this."
REASONING_SIGNATURE = "standin-signature"
TOOL_INPUT = {"location": "Paris"}
CONVERSE_USAGE = {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18,
                  "cacheReadInputTokens": 3, "cacheWriteInputTokens": 0}
ANTHROPIC_USAGE = {"input_tokens": 11, "output_tokens": 7,
                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3}
LATENCY_MS = 42
# Real Bedrock pads event payloads with a field `p` of varying length.
PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.coral.service/"
OPERATIONS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream", "count-tokens")
STREAMING_OPERATIONS = ("converse-stream", "invoke-with-response-stream")
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class AwsError(Exception):
    """An AWS-style error answer: status, error type (x-amzn-ErrorType) and message."""

    def __init__(self, status, error_type, message, namespace=ERROR_NAMESPACE):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.namespace = namespace


def auth_error(status, error_type, message):
    return AwsError(status, error_type, message, AUTH_NAMESPACE)


def validation_error(message):
    return AwsError(400, "ValidationException", message)


def malformed(detail):
    return validation_error(f"Malformed input request: #: {detail}, please reformat your input and try again.")


SCRIPTED_ERRORS = [
    ("throttle", 429, "ThrottlingException", "Too many requests, please wait before trying again."),
    ("invalid", 400, "ValidationException",
     "Malformed input request: the stand-in refuses model ids containing 'invalid', please reformat your input "
     "and try again."),
    ("denied", 403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
    ("model-error", 424, "ModelErrorException", "The model returned an error (scripted by the stand-in)."),
    ("unavailable", 503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
]


def scripted_error(model_id):
    """The scripted error for a model id, or None. `stream-throttle` ids answer normally here."""
    if "stream-throttle" in model_id:
        return None
    for needle, status, error_type, message in SCRIPTED_ERRORS:
        if needle in model_id:
            return AwsError(status, error_type, message)
    return None


# ---------------------------------------------------------------------------------------------
# SigV4 verification
# ---------------------------------------------------------------------------------------------

class _Resigner(SigV4Auth):
    """SigV4Auth that signs exactly the headers the client listed in SignedHeaders, with their received
    values (duplicates joined as botocore joins them)."""

    def __init__(self, credentials, region, signed_pairs):
        super().__init__(credentials, SERVICE, region)
        self._signed_pairs = signed_pairs

    def headers_to_sign(self, request):
        headers = HTTPHeaders()
        for name, value in self._signed_pairs:
            headers[name] = value
        return headers


def parse_authorization(value):
    """`AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..` -> dict, or AwsError."""
    prefix = "AWS4-HMAC-SHA256 "
    if not value.startswith(prefix):
        raise auth_error(403, "IncompleteSignatureException",
                         f"Authorization header requires the algorithm AWS4-HMAC-SHA256. Authorization={value}")
    parts = {}
    for item in value[len(prefix):].split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key] = val
    for key in ("Credential", "SignedHeaders", "Signature"):
        if key not in parts:
            raise auth_error(403, "IncompleteSignatureException",
                             f"Authorization header requires '{key}' parameter. Authorization={value}")
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise auth_error(403, "IncompleteSignatureException",
                         f"Credential must have exactly 5 slash-delimited elements, e.g. "
                         f"keyid/date/region/service/term, got '{parts['Credential']}'")
    return {"access_key": scope[0], "date": scope[1], "region": scope[2], "service": scope[3],
            "signed_headers": parts["SignedHeaders"].split(";"), "signature": parts["Signature"]}


def header_values(pairs, name):
    return [v for k, v in pairs if k.lower() == name]


def first_header(pairs, name):
    values = header_values(pairs, name)
    return values[0] if values else None


def check_signature(method, raw_path, pairs, body, now):
    """Verify the SigV4 signature of a received request. `pairs` are the headers as received. Returns the
    expected canonical request on success; raises AwsError otherwise."""
    authorization = first_header(pairs, "authorization")
    if authorization is None:
        raise auth_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    auth = parse_authorization(authorization)
    if auth["access_key"] != ACCESS_KEY_ID:
        raise auth_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if first_header(pairs, "x-amz-security-token") != SESSION_TOKEN:
        raise auth_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = first_header(pairs, "x-amz-date")
    if amz_date is None:
        raise auth_error(403, "IncompleteSignatureException",
                         "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    try:
        signed_at = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise auth_error(403, "IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.")
    if MAX_SKEW_SECONDS and abs(signed_at.timestamp() - now) > MAX_SKEW_SECONDS:
        now_text = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(SIGV4_TIMESTAMP)
        raise auth_error(403, "InvalidSignatureException",
                         f"Signature expired: {amz_date} is now earlier or later than {now_text} "
                         f"(more than {MAX_SKEW_SECONDS} s apart).")
    if auth["date"] != amz_date[:8]:
        raise auth_error(403, "InvalidSignatureException",
                         f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                         f"HTTP: '{auth['date']}' != '{amz_date[:8]}', from '{amz_date}'.")
    if auth["region"] != REGION:
        raise auth_error(403, "InvalidSignatureException",
                         f"Credential should be scoped to a valid region. (got '{auth['region']}', expected '{REGION}')")
    if auth["service"] != SERVICE:
        raise auth_error(403, "InvalidSignatureException",
                         f"Credential should be scoped to correct service: '{SERVICE}'. (got '{auth['service']}')")
    signed = auth["signed_headers"]
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            raise auth_error(403, "InvalidSignatureException",
                             f"'{needed}' must be a 'SignedHeader' in the AWS Authorization.")
    content_sha = first_header(pairs, "x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise auth_error(403, "InvalidSignatureException",
                         "The provided 'x-amz-content-sha256' header does not match what was computed.")

    signed_pairs = [(k.lower(), v) for k, v in pairs if k.lower() in signed]
    missing = [n for n in signed if not any(k == n for k, _ in signed_pairs)]
    if missing:
        raise auth_error(403, "InvalidSignatureException",
                         f"SignedHeaders names headers the request does not have: {', '.join(missing)}")
    host = first_header(pairs, "host") or ""
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}", data=body,
                         headers={k: v for k, v in pairs})
    request.context["timestamp"] = amz_date
    signer = _Resigner(Credentials(ACCESS_KEY_ID, SECRET, SESSION_TOKEN), REGION, signed_pairs)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, auth["signature"]):
        raise auth_error(403, "InvalidSignatureException",
                         "The request signature we calculated does not match the signature you provided. Check "
                         "your AWS Secret Access Key and signing method. Consult the service documentation for "
                         f"details.\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
                         f"The String-to-Sign should have been\n'{string_to_sign}'\n")
    return canonical


# ---------------------------------------------------------------------------------------------
# Event-stream encoding (application/vnd.amazon.eventstream)
# ---------------------------------------------------------------------------------------------

def encode_frame(headers, payload):
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8 bytes), string
    headers (name length u8, name, type 7, value length u16 BE, value), payload, CRC32 of all before it."""
    encoded_headers = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        encoded_headers += struct.pack(">B", len(n)) + n + struct.pack(">BH", 7, len(v)) + v
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded_headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def event_frame(event_type, payload):
    body = json.dumps(payload, separators=(",", ":")).encode()
    return encode_frame([(":event-type", event_type), (":content-type", "application/json"),
                         (":message-type", "event")], body)


def exception_frame(exception_type, message):
    body = json.dumps({"message": message}).encode()
    return encode_frame([(":exception-type", exception_type), (":content-type", "application/json"),
                         (":message-type", "exception")], body)


def padded(payload, index):
    return dict(payload, p=PADDING[: 3 + (index * 7) % (len(PADDING) - 3)])


def split_writes(frames):
    """Cut the concatenated frames into writes that cross frame boundaries: frame 0, 3, .. is cut inside its
    prelude, frame 1, 4, .. in the middle, and only frames 2, 5, .. start a write of their own."""
    data = b"".join(frames)
    cuts, start = set(), 0
    for i, frame in enumerate(frames):
        cuts.add(start + (7, len(frame) // 2, 0)[i % 3])
        start += len(frame)
    cuts.discard(0)
    edges = [0] + sorted(c for c in cuts if c < len(data)) + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


# ---------------------------------------------------------------------------------------------
# Request reading
# ---------------------------------------------------------------------------------------------

def words(value):
    return len(value.split())


def count_words(node):
    """Words in every `text` string, string `content` and string `system` of a JSON value."""
    total = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("text", "content", "system") and isinstance(value, str):
                total += words(value)
            else:
                total += count_words(value)
    elif isinstance(node, list):
        total += sum(count_words(v) for v in node)
    return total


class Plan:
    """What a normal answer holds: a reasoning block or not, a tool call (tool name) or text."""

    def __init__(self, thinking, tool_name, text):
        self.thinking = thinking
        self.tool_name = tool_name
        self.text = text

    @property
    def stop_reason(self):
        return "tool_use" if self.tool_name else "end_turn"


def answer_text(echo):
    return f"{TEXT_HEAD}. You said: {echo}" if echo else TEXT_HEAD


def text_pieces(text):
    """The text in three deltas (fewer when short)."""
    first, second = "Bonjour from ", "fake Bedrock"
    if text.startswith(first + second) and len(text) > len(first + second):
        return [first, second, text[len(first + second):]]
    return [first, text[len(first):]] if text.startswith(first) else [text]


def json_pieces(value):
    raw = json.dumps(value)
    third = max(1, len(raw) // 3)
    return [raw[:third], raw[third:2 * third], raw[2 * third:]]


def converse_plan(body):
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    blocks = last.get("content") or []
    has_result = any(isinstance(b, dict) and "toolResult" in b for b in blocks)
    tools = ((body.get("toolConfig") or {}).get("tools")) or []
    names = [t["toolSpec"]["name"] for t in tools if isinstance(t, dict) and "toolSpec" in t]
    echo_parts = []
    for b in blocks:
        if not isinstance(b, dict):
            continue
        if isinstance(b.get("text"), str):
            echo_parts.append(b["text"])
        for c in (b.get("toolResult") or {}).get("content") or []:
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                echo_parts.append(c["text"])
            elif isinstance(c, dict) and "json" in c:
                echo_parts.append(json.dumps(c["json"]))
    thinking = ((body.get("additionalModelRequestFields") or {}).get("thinking") or {}).get("type") == "enabled"
    tool = names[0] if names and not has_result and last.get("role") == "user" else None
    return Plan(thinking, tool, answer_text(" ".join(echo_parts)))


def anthropic_plan(body):
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
    has_result = any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks)
    names = [t["name"] for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    echo_parts = []
    for b in blocks:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            echo_parts.append(b["text"])
        elif b.get("type") == "tool_result":
            inner = b.get("content")
            if isinstance(inner, str):
                echo_parts.append(inner)
            for c in inner if isinstance(inner, list) else []:
                if isinstance(c, dict) and isinstance(c.get("text"), str):
                    echo_parts.append(c["text"])
    thinking = (body.get("thinking") or {}).get("type") == "enabled"
    tool = names[0] if names and not has_result and last.get("role") == "user" else None
    return Plan(thinking, tool, answer_text(" ".join(echo_parts)))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
_VALIDATOR = ParamValidator()


def validate_converse_shape(params, operation_name, shape=None):
    """Refuse what botocore's model of the operation refuses (unknown keys, wrong types, missing fields)."""
    if LAX:
        return
    shape = shape or _MODEL.operation_model(operation_name).input_shape
    report = _VALIDATOR.validate(params, shape)
    if report.has_errors():
        raise validation_error(report.generate_report())


def validate_converse_messages(body):
    if LAX:
        return
    messages = body.get("messages") or []
    if messages and messages[0].get("role") != "user":
        raise validation_error("A conversation must start with a user message. Try again with a conversation that "
                               "starts with a user message.")
    for i, (a, b) in enumerate(zip(messages, messages[1:])):
        if a.get("role") == b.get("role"):
            raise validation_error("A conversation must alternate between user and assistant roles. Make sure the "
                                   f"conversation alternates between user and assistant roles (messages.{i + 1}) "
                                   "and try again.")
    for i, message in enumerate(messages):
        if not message.get("content"):
            raise validation_error(f"The content field in the Message object at messages.{i} is empty. Add a "
                                   "ContentBlock object to the content field and try again.")
        for j, block in enumerate(message["content"]):
            if "text" in block and not str(block["text"]).strip():
                raise validation_error(f"The text field in the ContentBlock object at messages.{i}.content.{j} is "
                                       "blank. Add text to the text field, and try again.")


def validate_converse(body, model_id, operation_name):
    if not isinstance(body, dict):
        raise malformed("expected a JSON object")
    validate_converse_shape(dict(body, modelId=model_id), operation_name)
    validate_converse_messages(body)


def validate_anthropic(body, need_max_tokens=True):
    if not isinstance(body, dict):
        raise malformed("expected type: JSONObject")
    for key in ("model", "stream"):
        if key in body:
            raise malformed(f"extraneous key [{key}] is not permitted")
    if "anthropic_version" not in body:
        raise malformed("required key [anthropic_version] not found")
    if body["anthropic_version"] != ANTHROPIC_VERSION:
        raise validation_error(f"Invalid API version: {body['anthropic_version']!r}, expected {ANTHROPIC_VERSION!r}.")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise malformed("required key [messages] not found")
    if need_max_tokens and "max_tokens" not in body:
        raise malformed("required key [max_tokens] not found")


def parse_json_body(body):
    try:
        return json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        raise validation_error("Malformed input request: the body is not valid JSON, please reformat your input "
                               "and try again.")


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

def converse_answer(plan):
    content = []
    if plan.thinking:
        content.append({"reasoningContent": {"reasoningText": {"text": REASONING_TEXT,
                                                               "signature": REASONING_SIGNATURE}}})
    if plan.tool_name:
        content.append({"toolUse": {"toolUseId": "tooluse_standin_01", "name": plan.tool_name, "input": TOOL_INPUT}})
    else:
        content.append({"text": plan.text})
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": plan.stop_reason,
            "usage": CONVERSE_USAGE, "metrics": {"latencyMs": LATENCY_MS}}


def converse_events(plan, throttle_midway=False):
    """(event type, payload) pairs of a ConverseStream answer; with throttle_midway, the events before
    the scripted exception."""
    events = [("messageStart", {"role": "assistant"})]
    if throttle_midway:
        return events + [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Bonjour "}})]
    index = 0
    if plan.thinking:
        for piece in ("Let me think ", "about this."):
            events.append(("contentBlockDelta", {"contentBlockIndex": index,
                                                 "delta": {"reasoningContent": {"text": piece}}}))
        events.append(("contentBlockDelta", {"contentBlockIndex": index,
                                             "delta": {"reasoningContent": {"signature": REASONING_SIGNATURE}}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if plan.tool_name:
        events.append(("contentBlockStart", {"contentBlockIndex": index, "start": {
            "toolUse": {"toolUseId": "tooluse_standin_01", "name": plan.tool_name}}}))
        for piece in json_pieces(TOOL_INPUT):
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}))
    else:
        for piece in text_pieces(plan.text):
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}))
    events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": plan.stop_reason}))
    events.append(("metadata", {"usage": CONVERSE_USAGE, "metrics": {"latencyMs": LATENCY_MS}}))
    return events


def anthropic_content(plan):
    content = []
    if plan.thinking:
        content.append({"type": "thinking", "thinking": REASONING_TEXT, "signature": REASONING_SIGNATURE})
    if plan.tool_name:
        content.append({"type": "tool_use", "id": "toolu_standin_01", "name": plan.tool_name, "input": TOOL_INPUT})
    else:
        content.append({"type": "text", "text": plan.text})
    return content


def anthropic_answer(plan, model_id):
    return {"id": "msg_bdrk_standin01", "type": "message", "role": "assistant", "model": model_id,
            "content": anthropic_content(plan), "stop_reason": plan.stop_reason, "stop_sequence": None,
            "usage": ANTHROPIC_USAGE}


def anthropic_events(plan, model_id, throttle_midway=False):
    """The Anthropic SSE events (as JSON values) of an invoke-with-response-stream answer."""
    start_usage = dict(ANTHROPIC_USAGE, output_tokens=1)
    events = [{"type": "message_start", "message": {
        "id": "msg_bdrk_standin01", "type": "message", "role": "assistant", "model": model_id, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": start_usage}}]
    if throttle_midway:
        return events + [
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bonjour "}}]
    for index, block in enumerate(anthropic_content(plan)):
        kind = block["type"]
        if kind == "thinking":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": ""}})
            for piece in ("Let me think ", "about this."):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "thinking_delta", "thinking": piece}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": REASONING_SIGNATURE}})
        elif kind == "tool_use":
            events.append({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            for piece in json_pieces(TOOL_INPUT):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}})
        else:
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            for piece in text_pieces(block["text"]):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": piece}})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                   "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]}})
    events.append({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": ANTHROPIC_USAGE["input_tokens"], "outputTokenCount": ANTHROPIC_USAGE["output_tokens"],
        "invocationLatency": LATENCY_MS, "firstByteLatency": 12}})
    return events


def chunk_frame(event, index):
    data = json.dumps(event, separators=(",", ":")).encode()
    return event_frame("chunk", padded({"bytes": base64.b64encode(data).decode()}, index))


def count_tokens(body, model_id):
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        raise validation_error("1 validation error detected: Value null at 'input' failed to satisfy constraint: "
                               "Member must not be null")
    validate_converse_shape(dict(body, modelId=model_id), "CountTokens")
    given = body["input"]
    if "converse" in given:
        validate_converse_messages(given["converse"])
        return {"inputTokens": 5 + count_words(given["converse"])}
    if "invokeModel" in given:
        encoded = (given["invokeModel"] or {}).get("body")
        try:
            decoded = json.loads(base64.b64decode(encoded or "", validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise validation_error("Malformed input request: input.invokeModel.body must be the base64 encoding of "
                                   "a JSON body, please reformat your input and try again.")
        validate_anthropic(decoded, need_max_tokens=False)
        return {"inputTokens": 5 + count_words(decoded)}
    raise validation_error("Malformed input request: input must hold `converse` or `invokeModel`.")


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

RECORDS = []
RECORDS_LOCK = threading.Lock()
PATH_RE = re.compile(r"^/model/([^/]+)/([a-z-]+)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BedrockStandIn/1"

    def log_message(self, format, *args):
        if os.environ.get("STANDIN_VERBOSE"):
            sys.stderr.write("standin: " + (format % args) + "\n")

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def do_PUT(self):
        self.handle_request()

    def do_DELETE(self):
        self.handle_request()

    # -- plumbing -------------------------------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status, value, extra_headers=()):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, val in extra_headers:
            self.send_header(name, val)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_error_answer(self, err):
        self.send_json(err.status, {"message": err.message},
                       [("x-amzn-ErrorType", f"{err.error_type}:{err.namespace}")])

    def send_stream(self, frames, extra_headers=(), close=False):
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, val in extra_headers:
            self.send_header(name, val)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        for piece in split_writes(frames):
            time.sleep(STREAM_DELAY)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- dispatch -------------------------------------------------------------------------------

    def handle_request(self):
        raw_path = self.path
        body = self.read_body()
        if raw_path == "/_requests" and self.command == "GET":
            with RECORDS_LOCK:
                snapshot = json.loads(json.dumps(RECORDS))
            return self.send_json(200, snapshot)
        if raw_path == "/_reset" and self.command == "POST":
            with RECORDS_LOCK:
                RECORDS.clear()
            return self.send_json(200, {})
        pairs = list(self.headers.items())
        record = self.record(raw_path, pairs, body)
        try:
            try:
                check_signature(self.command, raw_path, pairs, body, time.time())
                record["signature_ok"] = True
                self.serve_operation(raw_path, record, body)
            except AwsError as err:
                record["status"] = err.status
                self.send_error_answer(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a stand-in bug or an input it did not foresee: say so, do not hang
            record["status"] = 500
            self.send_error_answer(AwsError(500, "InternalServerException", f"stand-in failure: {exc!r}"))

    def record(self, raw_path, pairs, body):
        headers = {}
        for name, value in pairs:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        match = PATH_RE.match(raw_path.split("?")[0])
        entry = {"method": self.command, "path": raw_path, "headers": headers, "body": parsed,
                 "body_text": body.decode("utf-8", "replace"),
                 "model_id": urllib.parse.unquote(match.group(1)) if match else None,
                 "operation": match.group(2) if match else None, "signature_ok": False, "status": None}
        with RECORDS_LOCK:
            RECORDS.append(entry)
        return entry

    def serve_operation(self, raw_path, record, body):
        match = PATH_RE.match(raw_path.split("?")[0])
        if self.command != "POST" or not match or match.group(2) not in OPERATIONS:
            raise AwsError(404, "UnknownOperationException", f"Unknown operation: {self.command} {raw_path}")
        model_id, operation = urllib.parse.unquote(match.group(1)), match.group(2)
        error = scripted_error(model_id)
        if error:
            raise error
        parsed = parse_json_body(body)
        midway = operation in STREAMING_OPERATIONS and "stream-throttle" in model_id
        record["status"] = 200
        if operation == "converse":
            validate_converse(parsed, model_id, "Converse")
            self.send_json(200, converse_answer(converse_plan(parsed)))
        elif operation == "converse-stream":
            validate_converse(parsed, model_id, "ConverseStream")
            events = converse_events(converse_plan(parsed), midway)
            frames = [event_frame(kind, padded(payload, i)) for i, (kind, payload) in enumerate(events)]
            if midway:
                frames.append(exception_frame("throttlingException", SCRIPTED_ERRORS[0][3]))
            self.send_stream(frames, close=midway)
        elif operation == "invoke":
            validate_anthropic(parsed)
            self.send_json(200, anthropic_answer(anthropic_plan(parsed), model_id), [
                ("X-Amzn-Bedrock-Input-Token-Count", str(ANTHROPIC_USAGE["input_tokens"])),
                ("X-Amzn-Bedrock-Output-Token-Count", str(ANTHROPIC_USAGE["output_tokens"])),
                ("X-Amzn-Bedrock-Invocation-Latency", str(LATENCY_MS))])
        elif operation == "invoke-with-response-stream":
            validate_anthropic(parsed)
            events = anthropic_events(anthropic_plan(parsed), model_id, midway)
            frames = [chunk_frame(event, i) for i, event in enumerate(events)]
            if midway:
                frames.append(exception_frame("throttlingException", SCRIPTED_ERRORS[0][3]))
            self.send_stream(frames, [("X-Amzn-Bedrock-Content-Type", "application/json")], close=midway)
        else:
            self.send_json(200, count_tokens(parsed, model_id))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(argv):
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    server = Server(("127.0.0.1", port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if "--no-stdin" in argv:
        threading.Event().wait()
    else:
        while sys.stdin.buffer.read(65536):
            pass
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
