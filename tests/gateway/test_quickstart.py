"""The quickstart through the official `openai` Python SDK: what a user sees first."""

import json
import time
import urllib.error
import urllib.request

import openai
import pytest

KEY = "sk-switchyard-demo"


@pytest.fixture
def client(quickstart):
    return openai.OpenAI(base_url=quickstart.url + "/v1", api_key=KEY, max_retries=0)


def test_chat(client):
    resp = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert resp.choices[0].message.content == "Hello! You said: Hello from the SDK"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 4
    assert resp.usage.completion_tokens == 7
    assert resp.usage.total_tokens == 11


def test_chat_headers(client):
    start = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="demo-chat", messages=[{"role": "user", "content": "hi"}]
    )
    wall_us = (time.monotonic() - start) * 1e6
    # The gateway's own time: some, less than the whole request as this client saw it, and far
    # below a second on any machine this runs on.
    overhead = int(raw.headers["x-switchyard-overhead-us"])
    assert 0 < overhead < min(wall_us, 1_000_000), (overhead, wall_us)
    assert raw.headers["x-switchyard-backend"] == "mock"
    assert raw.headers["x-switchyard-route"] == "default/demo-chat"


def test_overhead_leaves_out_the_upstream(client):
    """A stream's headers go out with its first token, which the quickstart's mock sends after
    20 ms (`timeToFirstToken`): that wait is the upstream's, not the gateway's."""
    start = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="demo-chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    wall_us = (time.monotonic() - start) * 1e6
    list(raw.parse())
    overhead = int(raw.headers["x-switchyard-overhead-us"])
    assert wall_us >= 20_000, wall_us
    assert 0 < overhead < wall_us - 20_000, (overhead, wall_us)


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "Hello! You said: stream me please"
    assert finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 6)


def test_streaming_without_usage_has_no_empty_chunks(client):
    chunks = list(
        client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert chunks, "no chunks"
    # Every chunk a client did not ask usage for has a choice: `chunk.choices[0]` never fails.
    assert all(len(c.choices) == 1 for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_embeddings(client):
    resp = client.embeddings.create(model="demo-embed", input=["one two", "three"])
    assert [d.index for d in resp.data] == [0, 1]
    assert len(resp.data[0].embedding) == 8
    assert resp.usage.prompt_tokens == 3
    again = client.embeddings.create(model="demo-embed", input=["one two", "three"])
    assert again.data[0].embedding == resp.data[0].embedding


def test_models_lists_the_keys_routes(client):
    assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]


def test_unknown_key_is_authentication_error(quickstart):
    bad = openai.OpenAI(base_url=quickstart.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    # The key never comes back in an error.
    assert "sk-wrong" not in str(e.value)


def test_missing_key_is_authentication_error(quickstart):
    req = urllib.request.Request(quickstart.url + "/v1/models")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401
    assert json.loads(e.value.read())["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-unknown", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    assert "gpt-unknown" in e.value.message


def test_bad_requests(client, quickstart):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo-chat", messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="demo-chat", input="x")
    assert "chat route" in e.value.message
    req = urllib.request.Request(
        quickstart.url + "/v1/chat/completions",
        data=b"{not json",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400
    assert "could not parse the JSON body" in json.loads(e.value.read())["error"]["message"]


def test_the_mock_refuses_the_responses_api_clearly_streamed_or_not(client):
    """The quickstart's `mock` provider serves chat completions: a Responses request, streamed
    or not, is a 400 that says so (it once streamed chat-completion chunks the SDK could not
    read as Responses events)."""
    for stream in (True, False):
        with pytest.raises(openai.BadRequestError) as e:
            r = client.responses.create(model="demo-chat", input="Hello", stream=stream)
            if stream:
                list(r)
        assert "serves chat completions, embeddings, moderations and rerank, not the Responses API" in e.value.message, e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        list(client.completions.create(model="demo-chat", prompt="Hello", stream=True))
    assert "not legacy completions" in e.value.message


def test_body_too_large(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "x" * (11 * 1024 * 1024)}]
        )
    assert e.value.status_code == 413
    assert e.value.code == "request_too_large"


def test_metrics_are_not_served_on_the_client_port(quickstart):
    """Route names, teams, spend and budgets left: only on the metrics port."""
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(quickstart.url + "/metrics")
    assert e.value.code == 404
    assert json.loads(e.value.read())["error"]["code"] == "not_found"
    with urllib.request.urlopen(quickstart.metrics_url + "/metrics") as r:
        assert "switchyard_config_generation 1" in r.read().decode()
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(quickstart.url + path) as r:
            assert r.status == 200


def test_metrics_count_requests_and_tokens(client, quickstart):
    def scrape():
        with urllib.request.urlopen(quickstart.metrics_url + "/metrics") as r:
            return r.read().decode()

    def value(text, prefix):
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ok = 'switchyard_requests_total{backend="mock",operation="chat",provider="mock",route="default/demo-chat",status="2xx"}'
    out = 'switchyard_tokens_total{route="default/demo-chat",type="output"}'
    before = scrape()
    client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "count me"}])
    after = scrape()
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, out) == value(before, out) + 5
    assert "switchyard_request_duration_seconds_bucket" in after
    assert "sk-switchyard-demo" not in after
