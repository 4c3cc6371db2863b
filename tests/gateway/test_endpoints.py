"""The API surface beyond chat (issue 17): LiteLLM's operational aliases, wildcard routes, and the
endpoints that came after chat, each through the official SDK method against the gateway, which
serves them from the mock provider in each provider's wire format.

The providers and routes come from examples/providers (pointed at a mock provider on a free port),
plus the routes of EXTRA below."""

import json
import urllib.error
import urllib.request

import openai
import pytest
import yaml

from harness import Gateway, MockProvider, REPO

KEY = "sk-switchyard-demo"


def route(name, provider, model, **spec):
    return {
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
        "metadata": {"name": name.replace("/", "-").replace("*", "any"), "namespace": "default"},
        "spec": {"model": name, "retries": {"attempts": 0},
                 "backends": [{"providerRef": {"name": provider}, "model": model}], **spec},
    }


EXTRA = []


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock = MockProvider()
    config = tmp_path_factory.mktemp("endpoints")
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    (config / "extra.yaml").write_text(yaml.safe_dump_all(EXTRA))
    gw = Gateway(config)
    yield gw, mock
    gw.stop()
    print(gw.output())
    mock.stop()


@pytest.fixture
def oai(env):
    return openai.OpenAI(base_url=env[0].url + "/v1", api_key=KEY, max_retries=0)


def get(url, key=None):
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


# --- 1. Operational aliases, as LiteLLM serves them ------------------------------------------


def test_health_paths_answer_like_healthz(env):
    gw = env[0]
    for base in (gw.url, gw.metrics_url):
        status, body = get(base + "/health")
        assert (status, json.loads(body)) == (200, {"status": "healthy"})
        for path in ("/health/liveliness", "/health/liveness"):
            assert get(base + path)[0] == 200
        status, body = get(base + "/health/readiness")
        assert status == 200 and body.startswith(b"ready generation=")


def test_openai_paths_without_the_v1_prefix(env):
    """A client whose base URL is LiteLLM's bare host keeps working."""
    bare = openai.OpenAI(base_url=env[0].url, api_key=KEY, max_retries=0)
    r = bare.chat.completions.create(model="openai-chat", messages=[{"role": "user", "content": "no prefix"}])
    assert r.choices[0].message.content == "Hello! You said: no prefix"
    assert r.usage.prompt_tokens == 2
    stream = bare.chat.completions.create(
        model="openai-chat", messages=[{"role": "user", "content": "a b c"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello! You said: a b c"
    assert bare.completions.create(model="openai-chat", prompt="old style").choices[0].text
    e = bare.embeddings.create(model="openai-embed", input=["one", "two"])
    assert [d.index for d in e.data] == [0, 1]
    assert "openai-chat" in [m.id for m in bare.models.list()]
    # The same key checks apply there.
    bad = openai.OpenAI(base_url=env[0].url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as e:
        bare.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_unknown_paths_name_what_is_served(env):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(env[0].url + "/v1/nothing-here", KEY)
    assert e.value.code == 404
    message = json.loads(e.value.read())["error"]["message"]
    assert "/v1/chat/completions" in message and "without the /v1 prefix" in message
