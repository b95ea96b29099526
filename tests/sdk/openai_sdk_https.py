"""The official OpenAI Python SDK against Switchyard's TLS listener, trusting a test CA.

Run by tests/tls_listener.rs with SWITCHYARD_URL (https://localhost:PORT), SWITCHYARD_KEY,
SWITCHYARD_CA (the CA that signed the gateway's certificate) and SWITCHYARD_OTHER_CA (one that did not).
Python's ssl (OpenSSL) is the TLS client here, independent of the gateway's rustls.
"""
import os
import socket
import ssl
from urllib.parse import urlparse

import httpx
import openai

from harness import check, run

URL = os.environ["SWITCHYARD_URL"]
KEY = os.environ["SWITCHYARD_KEY"]
CA = os.environ["SWITCHYARD_CA"]
OTHER_CA = os.environ["SWITCHYARD_OTHER_CA"]
HOST = urlparse(URL).hostname
PORT = urlparse(URL).port


def client(ca=CA, key=KEY):
    return openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0, timeout=20,
                         http_client=openai.DefaultHttpxClient(verify=ca))


@check
def chat_over_https():
    r = client().chat.completions.create(model="fake-1", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "fake reply"
    assert r.usage.total_tokens == 7


@check
def chat_stream_over_https():
    stream = client().chat.completions.create(model="demo", stream=True,
                                              messages=[{"role": "user", "content": "stream me"}])
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert "You said: stream me" in text, text


@check
def upstream_stream_over_https_with_usage():
    stream = client().chat.completions.create(model="fake-1", stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "hi"}])
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)


@check
def models_over_https():
    ids = [m.id for m in client().models.list()]
    assert "demo" in ids, ids


@check
def errors_keep_their_schema_over_https():
    try:
        client(key="wrong-key").chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        assert e.body["code"] == "invalid_api_key", e.body


@check
def a_client_that_does_not_trust_the_ca_refuses_the_connection():
    try:
        client(ca=OTHER_CA).models.list()
        raise AssertionError("the certificate was accepted without its CA")
    except openai.APIConnectionError as e:
        assert isinstance(e.__cause__, (httpx.ConnectError, ssl.SSLError)), repr(e.__cause__)


def handshake(version):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((HOST, PORT), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.version(), tls.selected_alpn_protocol()


@check
def tls_1_2_and_1_3_with_alpn_http_1_1():
    assert handshake(ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", "http/1.1")
    assert handshake(ssl.TLSVersion.TLSv1_3) == ("TLSv1.3", "http/1.1")


run()
