"""Routing and resilience end to end: examples/resilience served by a real gateway, whose backends
use the mock provider's fault models (retries, fallback on 429, context-window fallback, cooldown,
hedging, first-token timeouts, streams cut after their first byte, rules), driven by the official
`openai` SDK and plain HTTP. Timing-exact behaviour is covered by the Rust tests on a paused clock
(crates/gateway/src/route/tests.rs); here it is the real thing, over sockets."""

import json
import subprocess
import time
import urllib.request

import openai
import pytest
import yaml

from harness import Gateway, MockProvider, REPO, binary

DEMO = "sk-switchyard-demo"
PREMIUM = "sk-switchyard-premium"
EU = "sk-switchyard-eu"
EXAMPLE = REPO / "examples" / "resilience"

# Routes only this suite adds: what must fail, and fail fast.
EXTRA = [
    {"model": "no-retry-400", "backends": [{"providerRef": {"name": "mock"}, "model": "mock-context-length"}],
     "retries": {"attempts": 3, "backoff": "100ms"}},
    {"model": "only-429", "backends": [{"providerRef": {"name": "mock"}, "model": "mock-429"}],
     "retries": {"attempts": 1, "backoff": "100ms"}},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock = MockProvider()
    config = tmp_path_factory.mktemp("resilience")
    for f in EXAMPLE.glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    (config / "extra.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": r["model"], "namespace": "default"}, "spec": r}
        for r in EXTRA
    ]))
    gw = Gateway(config)
    yield gw, mock
    gw.stop()
    mock.stop()
    print(gw.output()[-5000:])


def client(gw, key=DEMO):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


def post(gw, model, key=DEMO, content="hello", stream=False, headers=None):
    """A raw chat request: (status, headers, body text)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def mock_json(mock, path, method="GET"):
    req = urllib.request.Request(mock.url + path, method=method)
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
        return json.loads(text) if text.strip().startswith("{") else text


def routes_in_example():
    docs = [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return [d["spec"]["model"] for d in docs if d["kind"] == "LLMRoute"]


def test_the_example_is_valid():
    r = subprocess.run([binary(), "validate", str(EXAMPLE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 error(s)" in r.stdout


def test_every_route_answers_200(env):
    gw, _ = env
    models = routes_in_example()
    assert len(models) >= 9
    for model in models:
        r = client(gw).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "ping"}]
        )
        assert r.http_response.status_code == 200, model
        assert "ping" in r.parse().choices[0].message.content, model
        for h in ("x-switchyard-backend", "x-switchyard-attempts", "x-switchyard-fallback-depth",
                  "x-switchyard-route"):
            assert r.headers.get(h), (model, h)


def test_retry_until_the_flaky_upstream_answers(env):
    gw, mock = env
    mock_json(mock, "/mock/reset", "POST")
    start = time.monotonic()
    status, headers, body = post(gw, "retry-demo", content="third time lucky")
    assert status == 200, body
    assert "third time lucky" in body
    assert headers["x-switchyard-attempts"] == "3"
    assert headers["x-switchyard-fallback-depth"] == "0"
    # Backoffs of ~100 ms and ~200 ms (±20%).
    assert time.monotonic() - start >= 0.24
    status, headers, _ = post(gw, "retry-demo")
    assert (status, headers["x-switchyard-attempts"]) == (200, "1")


def test_a_400_is_not_retried(env):
    gw, mock = env
    before = mock_json(mock, "/mock/stats")["requests_total"]
    status, headers, body = post(gw, "no-retry-400")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "context_length_exceeded"
    assert mock_json(mock, "/mock/stats")["requests_total"] == before + 1


def test_retry_after_is_honoured(env):
    gw, mock = env
    before = mock_json(mock, "/mock/stats")["requests_total"]
    start = time.monotonic()
    with pytest.raises(openai.RateLimitError) as e:
        client(gw).chat.completions.create(model="only-429", messages=[{"role": "user", "content": "x"}])
    # The retry waited for the mock's retry-after (1 s), not the 100 ms backoff.
    assert time.monotonic() - start >= 1.0
    assert mock_json(mock, "/mock/stats")["requests_total"] == before + 2
    assert e.value.response.headers.get("retry-after") == "1"


def test_fallback_on_429(env):
    gw, _ = env
    start = time.monotonic()
    status, headers, body = post(gw, "fallback-on-429", content="rescue me")
    assert status == 200, body
    assert "rescue me" in body
    assert headers["x-switchyard-route"] == "default/backup-chat"
    assert headers["x-switchyard-fallback-depth"] == "1"
    assert headers["x-switchyard-attempts"] == "3"
    assert time.monotonic() - start >= 1.0


def test_context_window_fallback_is_decided_before_sending(env):
    gw, mock = env
    status, headers, _ = post(gw, "long-context", content="short question")
    assert (status, headers["x-switchyard-route"], headers["x-switchyard-backend"]) == (
        200, "default/long-context", "mock")
    long = "please summarise this sentence about routing " * 20
    before = mock_json(mock, "/mock/stats")["requests_total"]
    status, headers, body = post(gw, "long-context", content=long)
    assert status == 200, body
    assert headers["x-switchyard-route"] == "default/long-context-large"
    assert headers["x-switchyard-fallback-depth"] == "1"
    assert headers["x-switchyard-attempts"] == "1"
    # One upstream request, and it went to the large model.
    assert mock_json(mock, "/mock/stats")["requests_total"] == before + 1
    assert mock_json(mock, "/mock/last-request?provider=openai")["model"] == "large-model"


def test_cooldown_skips_a_failing_backend(env):
    gw, _ = env
    # Until 3 consecutive failures (an earlier test may have made one): the primary fails, the
    # standby answers at once.
    tried_primary = 0
    while True:
        status, headers, _ = post(gw, "cooldown-demo")
        assert (status, headers["x-switchyard-backend"]) == (200, "standby")
        if headers["x-switchyard-attempts"] == "1":
            break
        assert headers["x-switchyard-attempts"] == "2"
        tried_primary += 1
        assert tried_primary <= 3
    assert tried_primary >= 2
    # The circuit is open: the primary is not tried any more.
    for _ in range(3):
        status, headers, _ = post(gw, "cooldown-demo")
        assert (status, headers["x-switchyard-backend"], headers["x-switchyard-attempts"]) == (200, "standby", "1")
    metrics = urllib.request.urlopen(gw.metrics_url + "/metrics").read().decode()
    assert 'switchyard_backend_state{model="mock-500",provider="default/unreliable",state="open"} 1' in metrics
    assert 'switchyard_retries_total{backend="primary",reason="server-error",route="default/cooldown-demo"} 3' in metrics


def test_hedging_answers_from_the_fast_backend_and_cancels_the_slow_one(env):
    gw, mock = env
    cancelled = mock_json(mock, "/mock/stats")["streams_cancelled"]
    start = time.monotonic()
    r = client(gw).chat.completions.with_raw_response.create(
        model="hedged", messages=[{"role": "user", "content": "hedge me"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    elapsed = time.monotonic() - start
    assert "hedge me" in text
    assert r.headers["x-switchyard-backend"] == "standby"
    assert r.headers["x-switchyard-attempts"] == "2"
    assert 0.3 <= elapsed < 2.0, elapsed
    # The slow stream was dropped: the mock saw its client go away.
    deadline = time.monotonic() + 5
    while mock_json(mock, "/mock/stats")["streams_cancelled"] <= cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock_json(mock, "/mock/stats")["streams_cancelled"] == cancelled + 1


def test_a_stream_fails_over_before_its_first_byte(env):
    gw, _ = env
    start = time.monotonic()
    r = client(gw).chat.completions.with_raw_response.create(
        model="first-token-timeout", messages=[{"role": "user", "content": "still there?"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    assert "still there?" in text
    assert (r.headers["x-switchyard-backend"], r.headers["x-switchyard-attempts"]) == ("standby", "2")
    assert 0.5 <= time.monotonic() - start < 3.0


def test_a_stream_is_not_retried_after_its_first_byte(env):
    gw, _ = env
    r = client(gw).chat.completions.with_raw_response.create(
        model="cut-stream", messages=[{"role": "user", "content": "one two three four five six"}], stream=True
    )
    assert (r.headers["x-switchyard-backend"], r.headers["x-switchyard-attempts"]) == ("primary", "1")
    text = ""
    with pytest.raises(openai.APIError):
        for c in r.parse():
            if c.choices:
                text += c.choices[0].delta.content or ""
    assert text.startswith("Hello! You")
    # Not streamed: nothing reached the client before the break, so the standby answers.
    status, headers, body = post(gw, "cut-stream", content="whole please")
    assert status == 200 and "whole please" in body
    assert (headers["x-switchyard-backend"], headers["x-switchyard-attempts"]) == ("standby", "2")


def test_rules_premium_prefers_azure_eu_stays_in_eu(env):
    gw, _ = env
    for _ in range(4):
        _, h, _ = post(gw, "assistant", key=DEMO)
        assert h["x-switchyard-backend"] in ("bedrock-us", "bedrock-eu")
        _, h, _ = post(gw, "assistant", key=PREMIUM)
        assert h["x-switchyard-backend"] in ("azure-us", "azure-eu")
        status, h, body = post(gw, "assistant", key=EU)
        assert status == 200, body
        assert h["x-switchyard-backend"] in ("bedrock-eu", "azure-eu")
    _, h, _ = post(gw, "assistant", key=DEMO, headers={"x-priority": "batch"})
    assert h["x-switchyard-route"] == "default/backup-chat"
