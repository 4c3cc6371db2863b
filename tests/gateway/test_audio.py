"""Audio (issue 17): transcriptions and translations (multipart uploads streamed to the
upstream) and speech (audio streamed back), through the official openai SDK against the
gateway, served by the mock provider in OpenAI's, Azure OpenAI's and Groq's paths. Spend is read
from the gateway's metrics: Whisper per second of audio, GPT-4o transcribe per token, speech per
input character."""

import io
import json
import time
import urllib.error
import urllib.request
import wave

import openai
import pytest
import yaml

from harness import Gateway, MockProvider, REPO
from test_endpoints import key, provider, route

KEY = "sk-switchyard-demo"
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."


def priced(r, **pricing):
    r["spec"]["backends"][0]["pricing"] = pricing
    return r


def extra(mock_port):
    mock = f"http://127.0.0.1:{mock_port}"
    return [
        # whisper-1 at $0.006 a minute: $100 per million seconds.
        priced(route("whisper", "openai", "whisper-1", mode="audio-transcription"), input=100, output=0),
        # GPT-4o transcribe bills tokens: $6 per million audio tokens in, $10 out.
        priced(route("gpt-4o-transcribe", "openai", "gpt-4o-transcribe", mode="audio-transcription"),
               input=6, output=10),
        route("azure-whisper", "azure-openai", "whisper", mode="audio-transcription"),
        # Its stream paced at 4 events a second.
        priced(route("gpt-4o-transcribe-slow", "openai", "gpt-4o-transcribe-tps-4", mode="audio-transcription"),
               input=6, output=10),
        provider("groq-audio", "groq", f"{mock}/openai/v1"),
        route("groq-whisper", "groq-audio", "whisper-large-v3", mode="audio-transcription"),
        route("anthropic-audio", "anthropic", "claude-sonnet-4-5", mode="audio-transcription"),
        # tts-1 at $15 per million characters.
        priced(route("tts", "openai", "tts-1", mode="audio-speech"), input=15, output=0),
        route("azure-tts", "azure-openai", "tts", mode="audio-speech"),
        route("chat-only", "openai", "gpt-4o"),
        *key("audio-rpm", "sk-audio-rpm", limits={"rpm": 1}),
        # Speech retries on the route's other backends: the first always fails with a 500.
        priced(route("tts-failover", "openai", "tts-1-mock-500", mode="audio-speech",
                     retries={"attempts": 2, "backoff": "10ms"}), input=15, output=0),
        route("tts-broken", "openai", "tts-1-mock-429", mode="audio-speech",
              retries={"attempts": 1, "backoff": "10ms"}),
        # 5 chunks of 1 KiB a second: "Hello world" (4,400 bytes) takes about a second.
        route("tts-slow", "openai", "tts-1-tps-5", mode="audio-speech"),
        *key("audio-one", "sk-audio-one", limits={"maxParallel": 1}),
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock = MockProvider()
    config = tmp_path_factory.mktemp("audio")
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    objects = extra(mock.port)
    failover = next(o for o in objects if o["metadata"]["name"] == "tts-failover")
    failover["spec"]["backends"].append({"name": "second", "providerRef": {"name": "openai"}, "model": "tts-1",
                                         "pricing": {"input": 30, "output": 0}})
    (config / "extra.yaml").write_text(yaml.safe_dump_all(objects))
    gw = Gateway(config)
    yield gw, mock
    gw.stop()
    print(gw.output())
    mock.stop()


@pytest.fixture
def oai(env):
    return openai.OpenAI(base_url=env[0].url + "/v1", api_key=KEY, max_retries=0)


def wav_bytes(seconds, rate=16000):
    """A real WAV file: `seconds` of 16-bit mono silence, written by Python's wave module."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def spend(gw, route_name):
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as m:
        text = m.read().decode()
    lines = [l for l in text.splitlines()
             if l.startswith("switchyard_spend_usd_total") and f'route="default/{route_name}"' in l]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def last_request(mock, which="openai"):
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider={which}") as got:
        return got.headers["x-mock-path"], got.read()


def test_a_transcription_is_billed_per_second_of_audio(env, oai):
    gw, mock = env
    audio = wav_bytes(2.5)
    before = spend(gw, "whisper")
    r = oai.audio.transcriptions.create(model="whisper", file=("hello.wav", audio, "audio/wav"),
                                        response_format="verbose_json", language="en")
    assert r.text == TRANSCRIPT and r.duration == 2.5
    # 2.5 s billed as 3 s at $100 per million seconds.
    assert abs(spend(gw, "whisper") - before - 0.0003) < 1e-12
    path, body = last_request(mock)
    assert path == "/v1/audio/transcriptions"
    # The upstream got the backend's model and the file byte for byte.
    assert b'name="model"\r\n\r\nwhisper-1\r\n' in body and audio in body


def test_a_text_answer_is_billed_from_the_wav_header(env, oai):
    gw, _ = env
    before = spend(gw, "whisper")
    text = oai.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(4.2), "audio/wav"),
                                           response_format="text")
    assert text.strip() == TRANSCRIPT
    assert abs(spend(gw, "whisper") - before - 0.0005) < 1e-12


def test_the_file_may_come_before_the_model(env):
    """curl -F file=@a.wav -F model=whisper: the gateway holds the file until the model part."""
    gw, mock = env
    audio = wav_bytes(1.0)
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n" + audio +
            b"\r\n--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper"
            b"\r\n--b0undary\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\njson"
            b"\r\n--b0undary--\r\n")
    req = urllib.request.Request(gw.url + "/v1/audio/transcriptions", data=body, method="POST", headers={
        "authorization": f"Bearer {KEY}", "content-type": "multipart/form-data; boundary=b0undary"})
    with urllib.request.urlopen(req) as r:
        assert r.headers["x-switchyard-route"] == "default/whisper"
        assert json.loads(r.read())["text"] == TRANSCRIPT
    _, got = last_request(mock)
    assert got.index(audio) < got.index(b"whisper-1")


def test_translations_and_the_other_providers(env, oai):
    _, mock = env
    r = oai.audio.translations.create(model="whisper", file=("a.wav", wav_bytes(1.0), "audio/wav"))
    assert r.text == TRANSCRIPT
    assert last_request(mock)[0] == "/v1/audio/translations"
    assert oai.audio.transcriptions.create(model="azure-whisper", file=("a.wav", wav_bytes(1.0))).text == TRANSCRIPT
    path, _ = last_request(mock, "azure")
    assert path.startswith("/openai/deployments/whisper/audio/transcriptions?api-version=")
    assert oai.audio.transcriptions.create(model="groq-whisper", file=("a.wav", wav_bytes(1.0))).text == TRANSCRIPT
    assert last_request(mock)[0] == "/openai/v1/audio/transcriptions"


def test_token_billed_transcription_models_are_billed_by_tokens(env, oai):
    gw, _ = env
    before = spend(gw, "gpt-4o-transcribe")
    r = oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav_bytes(2.5), "audio/wav"))
    assert r.usage.input_tokens == 25 and r.usage.output_tokens == 10
    assert abs(spend(gw, "gpt-4o-transcribe") - before - (25 * 6 + 10 * 10) / 1e6) < 1e-12


def test_a_streamed_transcription_is_relayed_as_it_comes_and_billed_by_its_last_event(env, oai):
    gw, _ = env
    before = spend(gw, "gpt-4o-transcribe-slow")
    started = time.monotonic()
    events = []
    for e in oai.audio.transcriptions.create(model="gpt-4o-transcribe-slow", file=("a.wav", wav_bytes(2.5)),
                                             stream=True):
        events.append((time.monotonic() - started, e))
    types = [e.type for _, e in events]
    assert types == ["transcript.text.delta"] * 9 + ["transcript.text.done"], types
    assert "".join(e.delta for _, e in events[:-1]) == TRANSCRIPT
    done = events[-1][1]
    assert done.text == TRANSCRIPT and done.usage.input_tokens == 25 and done.usage.output_tokens == 10
    # Relayed, not held: the first event came long before the upstream's last (9 pauses of 250 ms).
    assert events[-1][0] - events[0][0] > 1.0, [t for t, _ in events]
    assert abs(spend(gw, "gpt-4o-transcribe-slow") - before - (25 * 6 + 10 * 10) / 1e6) < 1e-12
    # Whisper models do not stream: the provider's 400 reaches the client.
    with pytest.raises(openai.BadRequestError):
        oai.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(0.5)), stream=True)


def test_speech_streams_audio_back_billed_per_character(env, oai):
    gw, mock = env
    before = spend(gw, "tts")
    with oai.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="Hello world", response_format="wav") as r:
        assert r.headers["content-type"] == "audio/wav"
        chunks = list(r.iter_bytes(1024))
    audio = b"".join(chunks)
    assert audio[:4] == b"RIFF" and len(audio) == 44 + 11 * 400
    with wave.open(io.BytesIO(audio)) as w:
        assert w.getnframes() == 11 * 400
    assert abs(spend(gw, "tts") - before - 11 * 15 / 1e6) < 1e-12
    path, body = last_request(mock)
    assert path == "/v1/audio/speech" and json.loads(body)["model"] == "tts-1"
    mp3 = oai.audio.speech.create(model="azure-tts", voice="nova", input="Hi")
    assert mp3.content.startswith(b"ID3")
    path, body = last_request(mock, "azure")
    assert path.startswith("/openai/deployments/tts/audio/speech?api-version=") and "model" not in json.loads(body)


def speech_calls(mock):
    with urllib.request.urlopen(mock.url + "/mock/stats") as r:
        return json.loads(r.read())["requests"].get("/v1/audio/speech", 0)


def reset(mock):
    urllib.request.urlopen(urllib.request.Request(mock.url + "/mock/reset", method="POST")).read()


def test_speech_retries_on_the_routes_other_backend(env, oai):
    # The audio is the second backend's, billed once at its price; the failed attempt costs nothing.
    gw, mock = env
    reset(mock)
    before = spend(gw, "tts-failover")
    r = oai.audio.speech.with_raw_response.create(model="tts-failover", voice="alloy", input="Hello world",
                                                  response_format="wav")
    assert r.http_response.status_code == 200 and r.http_response.content[:4] == b"RIFF"
    assert speech_calls(mock) == 2
    assert json.loads(last_request(mock)[1])["model"] == "tts-1"
    assert abs(spend(gw, "tts-failover") - before - 11 * 30 / 1e6) < 1e-12
    # Every attempt failing: the provider's error after the route's retries, nothing billed.
    reset(mock)
    with pytest.raises(openai.APIStatusError) as e:
        oai.audio.speech.create(model="tts-broken", voice="alloy", input="x")
    assert e.value.status_code == 429
    assert speech_calls(mock) == 2
    assert spend(gw, "tts-broken") == 0.0


def test_speech_holds_the_keys_slot_until_the_audio_is_delivered(env):
    # maxParallel 1: while one speech's audio is still coming, a second request is refused;
    # once it is read to its end, the slot is free again.
    one = openai.OpenAI(base_url=env[0].url + "/v1", api_key="sk-audio-one", max_retries=0)
    with one.audio.speech.with_streaming_response.create(model="tts-slow", voice="alloy", input="Hello world",
                                                         response_format="wav") as r:
        chunks = r.iter_bytes(1024)
        first = next(chunks)
        assert first[:4] == b"RIFF"
        with pytest.raises(openai.RateLimitError):
            one.audio.speech.create(model="tts", voice="alloy", input="x")
        rest = b"".join(chunks)
    assert len(first) + len(rest) == 44 + 11 * 400
    assert one.audio.speech.create(model="tts", voice="alloy", input="x").content[:3] == b"ID3"


def test_audio_is_refused_where_the_provider_has_none(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.transcriptions.create(model="anthropic-audio", file=("a.wav", wav_bytes(0.5)))
    msg = e.value.message
    assert "default/anthropic-audio" in msg and "/v1/audio/transcriptions" in msg and "anthropic" in msg
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.speech.create(model="chat-only", voice="alloy", input="x")
    assert "chat route" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.speech.create(model="whisper", voice="alloy", input="x")
    assert "audio transcription route" in e.value.message


def test_the_keys_limits_apply(env):
    limited = openai.OpenAI(base_url=env[0].url + "/v1", api_key="sk-audio-rpm", max_retries=0)
    limited.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(0.5)))
    with pytest.raises(openai.RateLimitError) as e:
        limited.audio.speech.create(model="tts", voice="alloy", input="x")
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_an_upload_over_the_body_limit_is_refused(oai):
    with pytest.raises(openai.APIStatusError) as e:
        oai.audio.transcriptions.create(model="whisper", file=("big.wav", wav_bytes(400)))  # 12.8 MB
    assert e.value.status_code == 413
