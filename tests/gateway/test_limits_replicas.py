"""The limits docs/limits.md promises across replicas, on two real gateway processes sharing one
real `redis-server` (tpm, maxParallel), the key checks that need no Redis (allowedRoutes,
expiresAt), and spend computed from a translated provider's usage (Anthropic, Bedrock, Gemini,
Cohere upstreams played by the mock provider), whole and streamed.

test_limits.py holds rpm, provider quotas, budgets, alerts and the cache."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import openai
import pytest
import yaml

from harness import Gateway, MockProvider, REPO
from test_limits import chat, redis, write_config  # noqa: F401 (redis: the fixture)

# --- Across replicas ------------------------------------------------------------------------


def slow(config, ms):
    """The config's mock provider answers after `ms`: every admission of a burst happens before
    any request ends (and gives back what its estimate over-took)."""
    providers = config / "default-providers.yaml"
    providers.write_text(providers.read_text().replace("embeddingDimensions: 8", f"embeddingDimensions: 8, latency: {ms}ms"))


def burst(gateways, key, n, body=None):
    """`n` requests at once, alternating between the gateways."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(
            lambda i: (chat(gateways[i % 2], key, **(body or {}))), range(n)))


def test_two_gateways_sharing_redis_hold_tpm_exactly(tmp_path, gateway_on, redis):
    # One request's up-front estimate, read from a key with room: limit minus what is left.
    probe = write_config(tmp_path / "probe", keys=[("p", "sk-probe", "  limits: {tpm: 100000}\n")])
    r = chat(gateway_on(probe), "sk-probe", max_tokens=20)
    assert r.status_code == 200
    estimate = 100000 - int(r.headers["x-ratelimit-remaining-tokens"])
    assert estimate > 20

    # Room for three such requests and a half across both replicas: three are admitted.
    tpm = 3 * estimate + estimate // 2
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-tpm", f"  limits: {{tpm: {tpm}}}\n")])
    slow(config, 3000)
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    results = burst([a, b], "sk-tpm", 10, {"max_tokens": 20})
    codes = [r.status_code for r in results]
    assert codes.count(200) == 3, codes
    assert codes.count(429) == 7, codes
    for r in results:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert "tokens per min" in r.json()["error"]["message"], r.json()
    # Each replica got five: counting alone, each would have admitted three. The window is one.


def test_two_gateways_sharing_redis_hold_max_parallel_exactly(tmp_path, gateway_on, redis):
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-par", "  limits: {maxParallel: 2}\n")])
    slow(config, 3000)
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    results = burst([a, b], "sk-par", 8)
    codes = [r.status_code for r in results]
    # Four on each replica: holding slots alone, each would have let two through.
    assert codes.count(200) == 2, codes
    assert codes.count(429) == 6, codes
    # The slots are given back when the requests end: two more fit, on either replica.
    assert [chat(g, "sk-par").status_code for g in (a, b)] == [200, 200]


# --- Key checks -----------------------------------------------------------------------------


def test_allowed_routes_limit_a_key_to_its_routes(tmp_path, gateway_on):
    config = write_config(
        tmp_path / "cfg",
        routes=[("chat", ""), ("other", "")],
        keys=[("narrow", "sk-narrow", "  allowedRoutes: [chat]\n"), ("wide", "sk-wide", "")],
    )
    gw = gateway_on(config)
    assert chat(gw, "sk-narrow").status_code == 200
    r = chat(gw, "sk-narrow", model="other")
    assert r.status_code == 403, r.text
    assert "not allowed to use model `other`" in r.json()["error"]["message"]
    assert chat(gw, "sk-wide", model="other").status_code == 200
    # /v1/models lists only what the key may use.
    models = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-narrow", max_retries=0).models.list()
    assert [m.id for m in models] == ["chat"]


def test_expires_at_ends_a_key(tmp_path, gateway_on):
    soon = (datetime.now(timezone.utc) + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = write_config(
        tmp_path / "cfg",
        keys=[("old", "sk-old", "  expiresAt: 2020-01-01T00:00:00Z\n"),
              ("brief", "sk-brief", f"  expiresAt: {soon}\n")],
    )
    gw = gateway_on(config)
    r = chat(gw, "sk-old")
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert chat(gw, "sk-brief").status_code == 200
    deadline = time.monotonic() + 15
    while chat(gw, "sk-brief").status_code == 200:
        assert time.monotonic() < deadline, "the key outlived its expiresAt"
        time.sleep(0.5)
    assert chat(gw, "sk-brief").status_code == 401


# --- Spend from translated usage --------------------------------------------------------------

# USD per million tokens on every route below.
PRICE_IN, PRICE_OUT = 1000, 3000
TRANSLATED = ["anthropic", "bedrock", "gemini", "cohere"]


@pytest.fixture(scope="module")
def translated(tmp_path_factory):
    """A gateway in front of the mock provider speaking each provider's native API, one priced
    route per provider, JSON logs (the access log's cost)."""
    mock = MockProvider()
    config = tmp_path_factory.mktemp("translated")
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    routes = yaml.safe_load_all((REPO / "examples" / "providers" / "routes.yaml").read_text())
    model = {r["spec"]["model"]: r["spec"]["backends"][0]["model"] for r in routes if r}
    priced = [{
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
        "metadata": {"name": f"{t}-priced", "namespace": "default"},
        "spec": {"model": f"{t}-priced", "retries": {"attempts": 0},
                 "backends": [{"providerRef": {"name": t}, "model": model[f"{t}-chat"],
                               "pricing": {"input": PRICE_IN, "output": PRICE_OUT}}]},
    } for t in TRANSLATED]
    (config / "priced.yaml").write_text(yaml.safe_dump_all(priced))
    gw = Gateway(config, env={"SWITCHYARD_LOG_FORMAT": "json"})
    yield gw
    gw.stop()
    mock.stop()


def access_line(gw, request_id):
    """The access log line of one request (waits for a stream's, written when it ends)."""
    deadline = time.monotonic() + 10
    while True:
        for line in gw.output().splitlines():
            if '"switchyard::access"' in line and request_id in line:
                return json.loads(line)["fields"]
        assert time.monotonic() < deadline, f"no access log line for {request_id}"
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", TRANSLATED)
def test_spend_is_the_translated_providers_usage_priced(translated, provider, stream):
    oai = openai.OpenAI(base_url=translated.url + "/v1", api_key="sk-switchyard-demo", max_retries=0)
    rid = f"spend-{provider}-{stream}"
    # The mock counts a token a word: 5 prompt tokens; "Hello! You said: " and the 5 words, 8.
    messages = [{"role": "user", "content": "what does this request cost"}]
    if stream:
        chunks = list(oai.chat.completions.create(
            model=f"{provider}-priced", messages=messages, stream=True,
            stream_options={"include_usage": True}, extra_headers={"x-request-id": rid}))
        usage = chunks[-1].usage
    else:
        usage = oai.chat.completions.create(
            model=f"{provider}-priced", messages=messages, extra_headers={"x-request-id": rid}).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 8), usage
    line = access_line(translated, rid)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (5, 8), line
    assert line["usage_estimated"] is False
    assert abs(line["cost_usd"] - (5 * PRICE_IN + 8 * PRICE_OUT) / 1e6) < 1e-12, line
