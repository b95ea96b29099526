"""A scripted stand-in for Google's and Microsoft's token endpoints and for the Vertex AI, Gemini API and
Azure OpenAI APIs, for the gateway's tests.

A threaded HTTP/1.1 server (keep-alive; JSON with Content-Length, streams chunked) on 127.0.0.1. It prints
`PORT <n>` as its first stdout line and runs until its stdin closes or it is killed.

    python google_azure_standin.py --key-file PATH [--port N]

At start it generates an RSA-2048 key pair (`cryptography`) and writes a Google service account JSON key to
PATH (client_email `gateway@standin-project.iam.gserviceaccount.com`, private_key_id `standin-key-1`,
token_uri `http://127.0.0.1:<port>/google/token`). Env (defaults): STANDIN_TOKEN_TTL (4) seconds a token
lives; STANDIN_TOKEN_DELAY_MS (300) pause inside every exchange (widens the window in which a second,
concurrent exchange would show); STANDIN_ENTRA_TENANT (standin-tenant), STANDIN_ENTRA_CLIENT_ID
(standin-client), STANDIN_ENTRA_SECRET (standin/entra+secret=&), STANDIN_AZURE_KEY (standin-azure-key),
STANDIN_GEMINI_KEY (standin-gemini-key), STANDIN_AZURE_API_VERSION (2024-10-21).

Token endpoints (RFC 6749 answers `{"access_token", "expires_in", "token_type": "Bearer"}`):
  POST /google/token      form grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<JWT>. The
                          JWT is verified with Google's own library (google.auth.jwt.decode: RS256 signature
                          with the generated public key, iat/exp, aud = the token_uri), then iss = the
                          client_email, scope = cloud-platform, kid = standin-key-1, exp - iat <= 3600.
                          Refusals: 400 {"error": "invalid_grant", "error_description": ...}.
  POST /{tenant}/oauth2/v2.0/token   form grant_type=client_credentials, client_id, client_secret,
                          scope=https://cognitiveservices.azure.com/.default; wrong ones: 400/401
                          {"error": "invalid_request" | "invalid_client" | "invalid_scope", ...}.
  With failure mode on (POST /_fail {"on": true}) both answer 500 {"error": "temporarily_unavailable"}.

APIs (each checks its credential: a Bearer token this stand-in issued and that has not expired, or the
static key; a bad one: 401 in the API's error shape):
  Vertex, Claude:  POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict |
                   :streamRawPredict | models/count-tokens:rawPredict. Body: `anthropic_version` must be
                   `vertex-2023-10-16`; no `model` (count-tokens: `model` required). Answers Anthropic
                   messages / SSE; count-tokens {"input_tokens": 5 + words}.
  Vertex, Gemini:  POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:generateContent |
                   :streamGenerateContent?alt=sse | :countTokens | :predict (embeddings).
  Gemini API:      POST /v1beta/models/{m}:generateContent | :streamGenerateContent?alt=sse |
                   :batchEmbedContents | :countTokens, key in x-goog-api-key (or a Bearer token).
  Azure OpenAI:    POST /openai/deployments/{d}/chat/completions | completions | embeddings
                   ?api-version=<STANDIN_AZURE_API_VERSION> (else 404 like Azure), key in api-key or an
                   issued Bearer token. Answers carry Azure's content-filter results.

Script by model / deployment name (first match wins):
  `throttle`         429 (Google: RESOURCE_EXHAUSTED; Azure: code "429" with retry-after; Claude: Google's
                     shape, as Vertex answers quota errors)
  `filtered-prompt`  Azure: 400 code content_filter with innererror.content_filter_result
  `filtered-output`  Azure: 200 with finish_reason content_filter
  `unsafe`           Gemini: 200 promptFeedback.blockReason SAFETY, no candidates
  `invalid`          400 INVALID_ARGUMENT (Google) / invalid_request_error
  otherwise          a normal answer: text `Bonjour from <api> stand-in. You said: <last user text>`, or
                     a call of the first tool with {"location": "Paris"} when tools are offered and the
                     last message holds no tool result. Usage: 11 in, 7 out.

Control: GET /_requests (recorded API requests: method, path, query, headers, body, token_ok, token),
GET /_exchanges (each: kind, at, ok, error, token, ahead = the credential's previous token was still
valid when this exchange began), GET /_stats ({"exchanges", "max_concurrent_exchanges",
"expired_token_uses"}), POST /_fail {"on": bool}, POST /_reset.
"""
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt

TTL = float(os.environ.get("STANDIN_TOKEN_TTL", "4"))
TOKEN_DELAY = int(os.environ.get("STANDIN_TOKEN_DELAY_MS", "300")) / 1000.0
TENANT = os.environ.get("STANDIN_ENTRA_TENANT", "standin-tenant")
CLIENT_ID = os.environ.get("STANDIN_ENTRA_CLIENT_ID", "standin-client")
CLIENT_SECRET = os.environ.get("STANDIN_ENTRA_SECRET", "standin/entra+secret=&")
AZURE_KEY = os.environ.get("STANDIN_AZURE_KEY", "standin-azure-key")
GEMINI_KEY = os.environ.get("STANDIN_GEMINI_KEY", "standin-gemini-key")
API_VERSION = os.environ.get("STANDIN_AZURE_API_VERSION", "2024-10-21")
CLIENT_EMAIL = "gateway@standin-project.iam.gserviceaccount.com"
KEY_ID = "standin-key-1"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
VERTEX_VERSION = "vertex-2023-10-16"
TOOL_INPUT = {"location": "Paris"}
USAGE_IN, USAGE_OUT = 11, 7

LOCK = threading.Lock()
STATE = {"fail": False, "requests": [], "exchanges": [], "tokens": {}, "last_token": {}, "inflight": 0,
         "max_inflight": 0, "expired_uses": 0}
PUBLIC_PEM = None
TOKEN_URI = None


# --------------------------------------------------------------------------------------------------
# Tokens


def issue(kind, began):
    token = f"{kind}-{secrets.token_urlsafe(24)}"
    with LOCK:
        previous = STATE["last_token"].get(kind)
        ahead = previous is not None and STATE["tokens"][previous][1] > began
        STATE["tokens"][token] = (kind, time.time() + TTL)
        STATE["last_token"][kind] = token
        STATE["exchanges"].append({"kind": kind, "at": began, "ok": True, "token": token, "ahead": ahead})
    return {"access_token": token, "expires_in": int(TTL) if TTL == int(TTL) else TTL, "token_type": "Bearer"}


def refuse(kind, began, status, error, description):
    with LOCK:
        STATE["exchanges"].append({"kind": kind, "at": began, "ok": False, "error": error})
    return status, {"error": error, "error_description": description}


def google_exchange(form, began):
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return refuse("google", began, 400, "unsupported_grant_type", "Invalid grant_type.")
    assertion = form.get("assertion", "")
    try:
        header = google_jwt.decode_header(assertion)
        claims = google_jwt.decode(assertion, certs={KEY_ID: PUBLIC_PEM}, audience=TOKEN_URI)
    except Exception as e:  # google-auth raises ValueError and its own exceptions
        return refuse("google", began, 400, "invalid_grant", f"Invalid JWT: {e}")
    problems = []
    if header.get("alg") != "RS256" or header.get("kid") != KEY_ID:
        problems.append(f"header {header}")
    if claims.get("iss") != CLIENT_EMAIL:
        problems.append(f"iss {claims.get('iss')}")
    if claims.get("scope") != GOOGLE_SCOPE:
        problems.append(f"scope {claims.get('scope')}")
    if not (0 < claims.get("exp", 0) - claims.get("iat", 0) <= 3600):
        problems.append("exp - iat must be within an hour")
    if problems:
        return refuse("google", began, 400, "invalid_grant", "Invalid JWT claims: " + ", ".join(problems))
    return 200, issue("google", began)


def entra_exchange(tenant, form, began):
    if tenant != TENANT:
        return refuse("entra", began, 400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
    if form.get("grant_type") != "client_credentials":
        return refuse("entra", began, 400, "unsupported_grant_type", "AADSTS70003: unsupported grant_type")
    if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
        return refuse("entra", began, 401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
    if form.get("scope") != ENTRA_SCOPE:
        return refuse("entra", began, 400, "invalid_scope", f"AADSTS70011: invalid scope {form.get('scope')}")
    return 200, issue("entra", began)


def bearer_ok(headers, kind=None):
    value = headers.get("authorization", "")
    if not value.startswith("Bearer "):
        return False, None
    token = value[len("Bearer "):]
    with LOCK:
        known = STATE["tokens"].get(token)
        if known is None or (kind and known[0] != kind):
            return False, token
        if known[1] <= time.time():
            STATE["expired_uses"] += 1
            return False, token
    return True, token


# --------------------------------------------------------------------------------------------------
# Answers


def last_user_text(messages, text_of):
    for m in reversed(messages or []):
        if m.get("role") == "user":
            return text_of(m)
    return ""


def anthropic_text(m):
    c = m.get("content")
    if isinstance(c, str):
        return c
    out = []
    for b in c or []:
        if b.get("type") == "text":
            out.append(b.get("text", ""))
        elif b.get("type") == "tool_result":
            r = b.get("content")
            out.append(r if isinstance(r, str) else " ".join(x.get("text", "") for x in r or []))
    return " ".join(out)


def has_tool_result_anthropic(messages):
    last = (messages or [{}])[-1]
    c = last.get("content")
    return isinstance(c, list) and any(b.get("type") == "tool_result" for b in c)


def anthropic_answer(body, model):
    tools = body.get("tools") or []
    if tools and not has_tool_result_anthropic(body.get("messages")):
        content = [{"type": "text", "text": "Let me check."},
                   {"type": "tool_use", "id": "toolu_vertex_01", "name": tools[0]["name"], "input": TOOL_INPUT}]
        stop = "tool_use"
    else:
        said = last_user_text(body.get("messages"), anthropic_text)
        content = [{"type": "text", "text": f"Bonjour from Vertex Claude stand-in. You said: {said}"}]
        stop = "end_turn"
    return {"id": "msg_vertex_01", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def anthropic_events(body, model):
    message = anthropic_answer(body, model)
    start = dict(message, content=[], stop_reason=None, usage=dict(message["usage"], output_tokens=1))
    events = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            text = block["text"]
            for piece in (text[:12], text[12:]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block":
                                                   dict(block, input={})}))
            raw = json.dumps(block["input"])
            for piece in (raw[:8], raw[8:]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                        "stop_sequence": None},
                                     "usage": {"output_tokens": USAGE_OUT}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


def word_count(value):
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(word_count(v) for v in value)
    if isinstance(value, dict):
        return sum(word_count(v) for k, v in value.items() if k in ("text", "content", "system", "messages",
                                                                       "contents", "parts", "systemInstruction",
                                                                       "generateContentRequest"))
    return 0


def gemini_text(c):
    return " ".join(p.get("text", "") or (json.dumps(p["functionResponse"].get("response"))
                                          if "functionResponse" in p else "") for p in c.get("parts") or [])


def gemini_answer(body, label):
    tools = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    answered = any("functionResponse" in p for p in last.get("parts") or [])
    if tools and not answered:
        parts = [{"functionCall": {"name": tools[0]["name"], "args": TOOL_INPUT}}]
    else:
        said = last_user_text(contents, gemini_text)
        parts = [{"text": f"Bonjour from {label} stand-in. You said: {said}"}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0,
                            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]}],
            "usageMetadata": {"promptTokenCount": USAGE_IN, "candidatesTokenCount": USAGE_OUT,
                              "totalTokenCount": USAGE_IN + USAGE_OUT},
            "modelVersion": "gemini-standin-001"}


def gemini_events(body, label):
    answer = gemini_answer(body, label)
    parts = answer["candidates"][0]["content"]["parts"]
    chunks = []
    if "text" in parts[0]:
        text = parts[0]["text"]
        pieces = [text[:12], text[12:]]
    else:
        pieces = [None]
    for i, piece in enumerate(pieces):
        final = i == len(pieces) - 1
        part = {"text": piece} if piece is not None else parts[0]
        chunk = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                 "usageMetadata": {"promptTokenCount": USAGE_IN,
                                   "candidatesTokenCount": USAGE_OUT if final else 1 + i,
                                   "totalTokenCount": USAGE_IN + (USAGE_OUT if final else 1 + i)},
                 "modelVersion": "gemini-standin-001"}
        if final:
            chunk["candidates"][0]["finishReason"] = "STOP"
        # Gemini delimits its events with CRLF pairs.
        chunks.append(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
    return chunks


def google_error(status, code, message):
    return status, {"error": {"code": status, "message": message, "status": code}}


def openai_chat_text(m):
    c = m.get("content")
    if isinstance(c, str):
        return c
    return " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))


FILTER_OK = {"hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
             "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}


def azure_chat(body, deployment, filtered_output=False):
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    answered = messages and messages[-1].get("role") == "tool"
    if tools and not answered:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_azure_01", "type": "function",
             "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps(TOOL_INPUT)}}]}
        finish = "tool_calls"
    else:
        said = last_user_text(messages, openai_chat_text)
        message = {"role": "assistant", "content": f"Bonjour from Azure stand-in. You said: {said}"}
        finish = "stop"
    filters = dict(FILTER_OK)
    if filtered_output:
        message = {"role": "assistant", "content": "Bonjour"}
        finish = "content_filter"
        filters = dict(FILTER_OK, violence={"filtered": True, "severity": "medium"})
    return {"id": "chatcmpl-azure01", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_azure",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_OK}],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None,
                         "content_filter_results": filters}],
            "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT}}


def azure_chat_events(body, deployment):
    answer = azure_chat(body, deployment, "filtered-output" in deployment)
    base = {"id": "chatcmpl-azure01", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_azure"}
    # Azure's first chunk: no choices, the prompt's filter results.
    chunks = [dict(base, choices=[], model="", prompt_filter_results=answer["prompt_filter_results"])]
    message, finish = answer["choices"][0]["message"], answer["choices"][0]["finish_reason"]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        deltas = [{"role": "assistant", "content": None, "tool_calls": [
                      {"index": 0, "id": call["id"], "type": "function",
                       "function": {"name": call["function"]["name"], "arguments": ""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"][:10]}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"][10:]}}]}]
    else:
        text = message["content"]
        deltas = [{"role": "assistant", "content": ""}, {"content": text[:12]}, {"content": text[12:]}]
    for d in deltas:
        chunks.append(dict(base, choices=[{"index": 0, "delta": d, "finish_reason": None, "logprobs": None,
                                           "content_filter_results": FILTER_OK}]))
    chunks.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None,
                                       "content_filter_results": answer["choices"][0]["content_filter_results"]}]))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(dict(base, choices=[], usage=answer["usage"]))
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def azure_error(status, code, message, extra=None):
    error = {"message": message, "type": None, "param": "prompt", "code": code, "status": status}
    error.update(extra or {})
    return status, {"error": error}


# --------------------------------------------------------------------------------------------------
# Server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, value, extra=()):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_stream(self, chunks):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for c in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.flush()
            time.sleep(0.005)
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        with LOCK:
            if self.path == "/_requests":
                value = list(STATE["requests"])
            elif self.path == "/_exchanges":
                value = list(STATE["exchanges"])
            elif self.path == "/_stats":
                value = {"exchanges": len(STATE["exchanges"]), "max_concurrent_exchanges": STATE["max_inflight"],
                         "expired_token_uses": STATE["expired_uses"]}
            else:
                value = None
        self.send_json(200 if value is not None else 404, value)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path == "/_fail":
            with LOCK:
                STATE["fail"] = bool(json.loads(body or b"{}").get("on"))
            return self.send_json(200, {"fail": STATE["fail"]})
        if path == "/_reset":
            with LOCK:
                STATE["requests"].clear()
                STATE["exchanges"].clear()
                STATE["max_inflight"] = 0
                STATE["expired_uses"] = 0
            return self.send_json(200, {})
        if path == "/google/token" or path.endswith("/oauth2/v2.0/token"):
            return self.token(path, body, headers)
        return self.api(path, urllib.parse.parse_qs(query), query, headers, body)

    def token(self, path, body, headers):
        began = time.time()
        with LOCK:
            STATE["inflight"] += 1
            STATE["max_inflight"] = max(STATE["max_inflight"], STATE["inflight"])
            fail = STATE["fail"]
        try:
            time.sleep(TOKEN_DELAY)
            kind = "google" if path == "/google/token" else "entra"
            if fail:
                status, value = refuse(kind, began, 500, "temporarily_unavailable", "The service is down.")
            elif headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
                status, value = refuse(kind, began, 400, "invalid_request", "form body expected")
            else:
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
                if kind == "google":
                    status, value = google_exchange(form, began)
                else:
                    status, value = entra_exchange(path.split("/")[1], form, began)
        finally:
            with LOCK:
                STATE["inflight"] -= 1
        self.send_json(status, value)

    def api(self, path, params, query, headers, body):
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = {"method": self.command, "path": path, "query": query, "headers": headers, "body": parsed,
                  "token_ok": None}
        with LOCK:
            STATE["requests"].append(record)
        if path.startswith("/openai/deployments/"):
            return self.azure(path, params, headers, parsed, record)
        if "/publishers/anthropic/models/" in path:
            return self.vertex_claude(path, headers, parsed, record)
        if "/publishers/google/models/" in path or path.startswith("/v1beta/models/"):
            return self.gemini(path, params, headers, parsed, record)
        self.send_json(404, {"error": {"code": 404, "message": f"no such path {path}", "status": "NOT_FOUND"}})

    def check_bearer(self, headers, record, kind):
        ok, token = bearer_ok(headers, kind)
        record["token_ok"], record["token"] = ok, token
        return ok

    def vertex_claude(self, path, headers, body, record):
        if not self.check_bearer(headers, record, "google"):
            return self.send_json(*google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
        model, _, method = path.rsplit("/", 1)[1].partition(":")
        if not isinstance(body, dict) or body.get("anthropic_version") != VERTEX_VERSION:
            return self.send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                   "message": "anthropic_version: vertex-2023-10-16 is required"}})
        if model == "count-tokens" and method == "rawPredict":
            if not body.get("model"):
                return self.send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                       "message": "model: Field required"}})
            return self.send_json(200, {"input_tokens": 5 + word_count(body.get("messages")) + word_count(body.get("system"))})
        if "model" in body:
            return self.send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                   "message": "model: Extra inputs are not permitted"}})
        if "throttle" in model:
            return self.send_json(*google_error(429, "RESOURCE_EXHAUSTED",
                                                "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model."))
        if "overloaded" in model:
            return self.send_json(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        if method == "streamRawPredict":
            if body.get("stream") is not True:
                return self.send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                       "message": "streamRawPredict needs stream: true"}})
            return self.send_stream(anthropic_events(body, model))
        if method == "rawPredict":
            return self.send_json(200, anthropic_answer(body, model))
        self.send_json(*google_error(404, "NOT_FOUND", f"unknown method {method}"))

    def gemini(self, path, params, headers, body, record):
        vertex = path.startswith("/v1/projects/")
        if vertex:
            ok = self.check_bearer(headers, record, "google")
        else:
            ok = headers.get("x-goog-api-key") == GEMINI_KEY or self.check_bearer(headers, record, "google")
            record["token_ok"] = ok
        if not ok:
            return self.send_json(*google_error(401 if vertex else 400, "UNAUTHENTICATED" if vertex else "INVALID_ARGUMENT",
                                                "API key not valid. Please pass a valid API key."))
        model, _, method = path.rsplit("/", 1)[1].partition(":")
        label = "Vertex Gemini" if vertex else "Gemini"
        if not isinstance(body, dict):
            return self.send_json(*google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
        if "throttle" in model:
            return self.send_json(*google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))
        if "invalid" in model:
            return self.send_json(*google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."))
        if "echo-credential" in model:
            # An upstream that quotes the credential it was sent: the gateway must never relay it.
            credential = headers.get("x-goog-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            return self.send_json(*google_error(400, "INVALID_ARGUMENT", f"credential {credential} is not allowed here"))
        if method in ("generateContent", "streamGenerateContent") and "unsafe" in model:
            blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": USAGE_IN, "totalTokenCount": USAGE_IN}}
            if method == "generateContent":
                return self.send_json(200, blocked)
            return self.send_stream([f"data: {json.dumps(blocked)}\r\n\r\n".encode()])
        if method == "generateContent":
            return self.send_json(200, gemini_answer(body, label))
        if method == "streamGenerateContent":
            if params.get("alt") != ["sse"]:
                return self.send_json(*google_error(400, "INVALID_ARGUMENT", "alt=sse expected"))
            return self.send_stream(gemini_events(body, label))
        if method == "countTokens":
            if not vertex and "generateContentRequest" in body and not body["generateContentRequest"].get("model", "").startswith("models/"):
                return self.send_json(*google_error(400, "INVALID_ARGUMENT", "generateContentRequest.model is required"))
            return self.send_json(200, {"totalTokens": 5 + word_count(body)})
        if method == "predict" and vertex:
            instances = body.get("instances") or []
            if not instances or any(not isinstance(i.get("content"), str) for i in instances):
                return self.send_json(*google_error(400, "INVALID_ARGUMENT", "instances[].content is required"))
            dim = (body.get("parameters") or {}).get("outputDimensionality", 3)
            return self.send_json(200, {"predictions": [
                {"embeddings": {"statistics": {"truncated": False, "token_count": len(i["content"].split())},
                                "values": [round(0.1 * (n + 1) + k, 3) for n in range(dim)]}}
                for k, i in enumerate(instances)], "metadata": {"billableCharacterCount": 10}})
        if method == "batchEmbedContents" and not vertex:
            requests = body.get("requests") or []
            if not requests or any(r.get("model") != f"models/{model}" for r in requests):
                return self.send_json(*google_error(400, "INVALID_ARGUMENT", "requests[].model must be the path's model"))
            return self.send_json(200, {"embeddings": [
                {"values": [round(0.1 * (n + 1) + k, 3) for n in range(r.get("outputDimensionality", 3))]}
                for k, r in enumerate(requests)]})
        self.send_json(*google_error(404, "NOT_FOUND", f"unknown method {method}"))

    def azure(self, path, params, headers, body, record):
        if params.get("api-version") != [API_VERSION]:
            return self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if headers.get("api-key") is not None:
            ok = headers.get("api-key") == AZURE_KEY
            record["token_ok"] = ok
        else:
            ok = self.check_bearer(headers, record, "entra")
        if not ok:
            return self.send_json(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}})
        parts = path[len("/openai/deployments/"):].split("/", 1)
        deployment, operation = urllib.parse.unquote(parts[0]), parts[1] if len(parts) > 1 else ""
        if not isinstance(body, dict):
            return self.send_json(400, {"error": {"code": "BadRequest", "message": "invalid JSON"}})
        if "throttle" in deployment:
            return self.send_json(429, {"error": {"code": "429", "message": f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {API_VERSION} have exceeded token rate limit of your current pricing tier. Please retry after 2 seconds."}},
                                  [("retry-after", "2"), ("x-ratelimit-remaining-requests", "0")])
        if "filtered-prompt" in deployment:
            return self.send_json(*azure_error(400, "content_filter",
                                               "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
                                               {"innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": dict(FILTER_OK, violence={"filtered": True, "severity": "high"})}}))
        if operation == "chat/completions":
            if not body.get("messages"):
                return self.send_json(400, {"error": {"code": "BadRequest", "message": "messages is required"}})
            if body.get("stream"):
                return self.send_stream(azure_chat_events(body, deployment))
            return self.send_json(200, azure_chat(body, deployment, "filtered-output" in deployment))
        if operation == "embeddings":
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            return self.send_json(200, {"object": "list", "model": "text-embedding-3-small", "data": [
                {"object": "embedding", "index": k, "embedding": [0.1 + k, 0.2, 0.3]} for k in range(len(inputs))],
                "usage": {"prompt_tokens": 4, "total_tokens": 4}})
        if operation == "completions":
            return self.send_json(200, {"id": "cmpl-azure01", "object": "text_completion", "created": 1700000000,
                                        "model": "gpt-35-turbo-instruct", "choices": [
                                            {"text": " Bonjour from Azure stand-in.", "index": 0, "finish_reason": "stop",
                                             "logprobs": None, "content_filter_results": FILTER_OK}],
                                        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
        self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main(argv):
    global PUBLIC_PEM, TOKEN_URI
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    key_file = argv[argv.index("--key-file") + 1]
    server = Server(("127.0.0.1", port), Handler)
    port = server.server_address[1]
    TOKEN_URI = f"http://127.0.0.1:{port}/google/token"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    PUBLIC_PEM = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    with open(key_file, "w") as f:
        json.dump({"type": "service_account", "project_id": "standin-project", "private_key_id": KEY_ID,
                   "private_key": private_pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
                   "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": TOKEN_URI}, f)
    print(f"PORT {port}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while sys.stdin.buffer.read(65536):
        pass
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
