"""The official OpenAI Python SDK's other APIs, passed through Switchyard to a scripted upstream.

Env: SWITCHYARD_URL, SWITCHYARD_KEY. Routes: models `gpt-image-1`, `whisper-1`, `tts-1`; path routes
`/v1/files` and `/v1/batches`. Prints 'N passed, N failed'.
"""
import os

import openai

from harness import check, run

client = openai.OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key=os.environ["SWITCHYARD_KEY"],
                       max_retries=0, timeout=20)
AUDIO = bytes(range(256)) * 512  # 128 KiB "audio"


def speech_bytes(size):
    return bytes(i % 251 for i in range(size))


@check
def images_generate():
    r = client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk")
    assert r.data[0].b64_json == "aGVsbG8=", r
    assert r.usage.total_tokens == 30, r.usage


@check
def audio_transcription_uploads_multipart():
    r = client.audio.transcriptions.create(model="whisper-1", file=("clip.mp3", AUDIO, "audio/mpeg"))
    # The upstream saw the whole multipart body: the file and the form fields around it.
    heard = int(r.text.split()[1])
    assert heard > len(AUDIO), r.text


@check
def audio_speech_streams_binary_back():
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="Hello") as r:
        assert r.headers["content-type"] == "audio/mpeg", r.headers
        data = b"".join(r.iter_bytes())
    assert data == speech_bytes(48 * 1024), len(data)


@check
def files_create_then_batches_create():
    f = client.files.create(file=("requests.jsonl", b'{"custom_id":"1"}\n', "application/jsonl"), purpose="batch")
    assert f.id == "file-fake1" and f.purpose == "batch", f
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.input_file_id == f.id and b.endpoint == "/v1/chat/completions", b
    got = client.files.retrieve(f.id)
    assert got.id == f.id


@check
def a_path_no_route_accepts_is_404_in_openais_shape():
    try:
        client.post("/rerank", body={"query": "x", "documents": ["a"]}, cast_to=object)
    except openai.NotFoundError as e:
        assert e.body["code"] == "unknown_url", e.body
    else:
        raise AssertionError("expected NotFoundError")


@check
def an_unrouted_model_is_404_model_not_found():
    try:
        client.moderations.create(model="omni-moderation-latest", input="hello")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    else:
        raise AssertionError("expected NotFoundError")


run()
