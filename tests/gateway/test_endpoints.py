"""The API surface beyond chat (issue 17): LiteLLM's operational aliases, wildcard routes, and the
endpoints that came after chat, each through the official SDK method against the gateway, which
serves them from the mock provider in each provider's wire format.

The providers and routes come from examples/providers (pointed at a mock provider on a free port),
plus the routes of EXTRA below."""

import base64
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


def key(name, value, **spec):
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-key", "namespace": "default"},
         "stringData": {"key": value}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
         "metadata": {"name": name, "namespace": "default"},
         "spec": {"secretRef": {"name": f"{name}-key"}, **spec}},
    ]


BUDGET = {"maxSpend": 10.0, "period": "daily", "action": "block"}


def provider(name, type_, base_url, **spec):
    return {
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": type_, "baseUrl": base_url,
                 "credentials": {"secretRef": {"name": "provider-keys", "key": "apiKey"}}, **spec},
    }


def extra(mock_port):
    mock = f"http://127.0.0.1:{mock_port}"
    return EXTRA + [
        # 4. An OpenAI account whose quota is one request a minute, falling back to Voyage
        # (examples/providers has the `voyage` Provider and `voyage-embed`).
        provider("openai-small-quota", "openai", f"{mock}/v1", quota={"rpm": 1}),
        route("text-embedding-3-small", "openai-small-quota", "text-embedding-3-small", mode="embeddings",
              fallbacks=[{"route": "voyage-embed"}]),
        # SDXL 1.0 on Bedrock, in its older body; priced as Bedrock sells it (up to 50 steps).
        {**route("sdxl-image", "bedrock", "stability.stable-diffusion-xl-v1", mode="image-generation"),
         "spec": {"model": "sdxl-image", "retries": {"attempts": 0}, "mode": "image-generation",
                  "backends": [{"providerRef": {"name": "bedrock"}, "model": "stability.stable-diffusion-xl-v1",
                                "pricing": {"input": 0, "output": 40000}}]}},
    ]


EXTRA = [
    # 2. Wildcards: any `openai/<model>`; `openai/gpt-4o-*` is longer and wins for its models.
    route("openai/*", "openai", "*"),
    route("openai/gpt-4o-*", "groq", "*"),
    *key("wild-only", "sk-wild-only", allowedRoutes=["openai/*"]),
    *key("one-model", "sk-one-model", allowedRoutes=["openai/gpt-4.1"]),
    *key("budgeted", "sk-budgeted", budget=BUDGET),
    # 3. Moderations: OpenAI's API, Mistral's (translated), the in-gateway mock; Groq has none.
    route("openai-moderation", "openai", "omni-moderation-latest", mode="moderation"),
    route("mistral-moderation", "mistral", "mistral-moderation-latest", mode="moderation"),
    route("mock-moderation", "mock", "mock-moderation", mode="moderation"),
    route("groq-moderation", "groq", "llama-guard", mode="moderation"),
    route("flaky-moderation", "openai", "omni-moderation-mock-429", mode="moderation",
          fallbacks=[{"route": "openai-moderation"}]),
    # 4. Rerank: Cohere (its shape), Voyage and vLLM (translated), the mock; OpenAI has none.
    # (`cohere-rerank`, `voyage-rerank`, `jina-rerank` and `jina-embed` are examples/providers'.)
    route("vllm-rerank", "vllm", "BAAI/bge-reranker-v2-m3", mode="rerank"),
    route("mock-rerank", "mock", "mock-rerank", mode="rerank"),
    route("openai-rerank", "openai", "gpt-4o", mode="rerank"),
    route("flaky-rerank", "cohere", "rerank-mock-429", mode="rerank", fallbacks=[{"route": "voyage-rerank"}]),
    # Bedrock's rerank models, through the Agents for Amazon Bedrock Runtime's Rerank.
    route("bedrock-rerank", "bedrock", "amazon.rerank-v1:0", mode="rerank"),
    route("bedrock-cohere-rerank", "bedrock", "cohere.rerank-v3-5:0", mode="rerank"),
    # 5. Images: OpenAI and Azure; DALL-E priced per image by the backend's pricing.
    route("openai-image", "openai", "gpt-image-1", mode="image-generation"),
    route("dalle", "openai", "dall-e-3", mode="image-generation", fallbacks=[{"route": "azure-image"}]),
    route("azure-image", "azure-openai", "dall-e-3", mode="image-generation"),
    route("flaky-image", "openai", "dall-e-3-mock-429", mode="image-generation", fallbacks=[{"route": "azure-image"}]),
    route("anthropic-image", "anthropic", "claude-sonnet-4-5", mode="image-generation"),
    # Imagen on Vertex AI (priced here: the table has no Vertex Imagen row) and Bedrock's Amazon
    # image models (the table's per-image prices), translated from OpenAI's images API.
    route("vertex-image", "vertex", "imagen-3.0-generate-002", mode="image-generation"),
    route("bedrock-image", "bedrock", "amazon.nova-canvas-v1:0", mode="image-generation"),
    route("titan-image", "bedrock", "amazon.titan-image-generator-v2:0", mode="image-generation"),
    route("stability-image", "bedrock", "stability.stable-image-core-v1:1", mode="image-generation"),
    route("flaky-bedrock-image", "bedrock", "amazon.nova-canvas-mock-429", mode="image-generation",
          fallbacks=[{"route": "vertex-image"}]),
]
EXTRA[-9]["spec"]["backends"][0]["pricing"] = {"input": 0, "output": 40000}
EXTRA[-5]["spec"]["backends"][0]["pricing"] = {"input": 0, "output": 40000}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock = MockProvider()
    config = tmp_path_factory.mktemp("endpoints")
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    (config / "extra.yaml").write_text(yaml.safe_dump_all(extra(mock.port)))
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


# --- 2. Wildcard routes --------------------------------------------------------------------


def last_model(mock, provider="openai"):
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider={provider}") as r:
        return json.loads(r.read())["model"]


def test_a_wildcard_route_forwards_the_suffix(env, oai):
    gw, mock = env
    r = oai.chat.completions.create(model="openai/gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello! You said: hi"
    assert last_model(mock) == "gpt-4.1"
    # The longest prefix wins: `openai/gpt-4o-*` sends to its own backend (groq here).
    stream = oai.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x y"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello! You said: x y"
    assert last_model(mock) == "mini"
    # Listed as written.
    assert {"openai/*", "openai/gpt-4o-*"} <= {m.id for m in oai.models.list()}
    # Metrics name the wildcard route, not each model.
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as m:
        text = m.read().decode()
    assert 'route="default/openai/*"' in text


def test_allowed_routes_name_the_wildcard_or_the_model(env):
    url = env[0].url + "/v1"
    wild = openai.OpenAI(base_url=url, api_key="sk-wild-only", max_retries=0)
    assert wild.chat.completions.create(model="openai/o3", messages=[{"role": "user", "content": "a"}]).choices
    with pytest.raises(openai.PermissionDeniedError):
        wild.chat.completions.create(model="openai-chat", messages=[{"role": "user", "content": "a"}])
    one = openai.OpenAI(base_url=url, api_key="sk-one-model", max_retries=0)
    assert one.chat.completions.create(model="openai/gpt-4.1", messages=[{"role": "user", "content": "a"}]).choices
    with pytest.raises(openai.PermissionDeniedError):
        one.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "a"}])


def test_a_budget_prices_the_model_the_wildcard_serves(env):
    gw, mock = env
    budgeted = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-budgeted", max_retries=0)
    # Priced from the table (gpt-4o: $2.50 / $10 per million tokens): spend is counted.
    r = budgeted.chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "one two three"}], max_tokens=50)
    assert r.parse().usage.prompt_tokens == 3
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as m:
        text = m.read().decode()
    spend = [l for l in text.splitlines() if l.startswith("switchyard_spend_usd_total") and 'route="default/openai/*"' in l]
    assert spend and float(spend[0].rsplit(" ", 1)[1]) > 0, spend
    # A model nobody priced cannot be reserved against a budget: refused, naming the route.
    with pytest.raises(openai.BadRequestError) as e:
        budgeted.chat.completions.create(model="openai/unpriced-model-xyz", messages=[{"role": "user", "content": "a"}])
    assert "openai/*" in e.value.message and "no known price" in e.value.message


# --- 3. Moderations ------------------------------------------------------------------------


@pytest.mark.parametrize("route_name", ["openai-moderation", "mistral-moderation", "mock-moderation"])
def test_moderations_through_the_sdk(oai, route_name):
    r = oai.moderations.create(model=route_name, input=["a kind word", "I will hurt you"])
    assert [x.flagged for x in r.results] == [False, True]
    assert r.results[1].categories.violence is True
    assert r.results[1].category_scores.violence > 0.5


def test_mistral_moderations_are_translated(env, oai):
    gw, mock = env
    r = oai.moderations.create(model="mistral-moderation", input="I will hurt you")
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider=openai") as got:
        sent = json.loads(got.read())
    assert sent == {"model": "mistral-moderation-latest", "input": "I will hurt you"}
    # Mistral's own category names stay beside OpenAI's.
    assert r.results[0].model_dump()["categories"]["violence_and_threats"] is True


def test_moderations_are_refused_where_the_provider_has_none(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.moderations.create(model="groq-moderation", input="x")
    message = e.value.message
    assert "default/groq-moderation" in message and "default/groq" in message and "/v1/moderations" in message
    # A chat route is not a moderation route.
    with pytest.raises(openai.BadRequestError) as e:
        oai.moderations.create(model="openai-chat", input="x")
    assert "chat route" in e.value.message


def test_moderations_fall_back_and_are_counted(env, oai):
    gw, _ = env
    r = oai.moderations.with_raw_response.create(model="flaky-moderation", input="fine")
    assert r.headers["x-switchyard-route"] == "default/openai-moderation"
    assert r.headers["x-switchyard-fallback-depth"] == "1"
    assert r.parse().results[0].flagged is False
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as m:
        text = m.read().decode()
    assert any(l.startswith("switchyard_requests_total") and 'route="default/openai-moderation"' in l
               for l in text.splitlines()), text


# --- 4. Rerank and Voyage ------------------------------------------------------------------

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]


@pytest.fixture
def co(env):
    import cohere

    return cohere.ClientV2(api_key=KEY, base_url=env[0].url)


@pytest.mark.parametrize("route_name", ["cohere-rerank", "voyage-rerank", "vllm-rerank", "mock-rerank", "jina-rerank",
                                        "bedrock-rerank", "bedrock-cohere-rerank"])
def test_rerank_through_the_cohere_sdk(co, route_name):
    r = co.rerank(model=route_name, query="capital of the United States", documents=DOCS, top_n=2)
    assert [x.index for x in r.results] == [1, 2]
    assert r.results[0].relevance_score >= r.results[1].relevance_score


def test_rerank_is_translated_for_voyage(env, co):
    gw, mock = env
    co.rerank(model="voyage-rerank", query="capital", documents=DOCS, top_n=1)
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider=voyage") as got:
        sent = json.loads(got.read())
    assert sent == {"model": "rerank-2", "query": "capital", "documents": DOCS, "top_k": 1}


def last_request(mock, provider):
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider={provider}") as got:
        return got.headers["x-mock-path"], json.loads(got.read())


def test_rerank_is_translated_for_jina(env, co):
    gw, mock = env
    before = spend(gw, "default/jina-rerank")
    r = co.rerank(model="jina-rerank", query="capital", documents=DOCS, top_n=1)
    assert [x.index for x in r.results] == [0]
    path, sent = last_request(mock, "jina")
    assert path == "/jina/v1/rerank"
    assert sent == {"model": "jina-reranker-v2-base-multilingual", "query": "capital", "documents": DOCS,
                    "top_n": 1, "return_documents": False}
    # Jina bills tokens (the mock counts words: 1 + 12 + 9 + 14), $0.05 a million for this model.
    assert abs(spend(gw, "default/jina-rerank") - before - 36 * 0.05e-6) < 1e-12


def test_rerank_refuses_cohere_fields_jina_has_no_equivalent_for(co):
    import cohere

    with pytest.raises(cohere.errors.BadRequestError) as e:
        co.rerank(model="jina-rerank", query="q", documents=["d"], max_tokens_per_doc=100)
    assert "max_tokens_per_doc" in json.dumps(e.value.body)


def test_rerank_on_bedrock_goes_to_the_agent_runtime_billed_per_query(env, co):
    gw, mock = env
    before = spend(gw, "default/bedrock-rerank")
    r = co.rerank(model="bedrock-rerank", query="capital of the United States", documents=DOCS, top_n=1)
    assert [x.index for x in r.results] == [1]
    path, sent = last_request(mock, "bedrock")
    assert path == "/rerank"
    assert sent["queries"] == [{"type": "TEXT", "textQuery": {"text": "capital of the United States"}}]
    assert sent["sources"][1] == {"type": "INLINE", "inlineDocumentSource": {"type": "TEXT",
                                                                            "textDocument": {"text": DOCS[1]}}}
    assert sent["rerankingConfiguration"] == {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
        "modelConfiguration": {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"},
        "numberOfResults": 1}}
    # $1 per 1,000 queries; a query covers up to 100 documents, so 150 documents are two.
    assert abs(spend(gw, "default/bedrock-rerank") - before - 0.001) < 1e-9
    co.rerank(model="bedrock-rerank", query="capital", documents=[f"document {i}" for i in range(150)], top_n=3)
    assert abs(spend(gw, "default/bedrock-rerank") - before - 0.003) < 1e-9


def test_rerank_on_bedrock_follows_next_token_until_every_result_is_in(env, co):
    gw, mock = env
    docs = [f"document {i} about the capital" if i % 7 == 0 else f"document {i}" for i in range(250)]
    before_spend = spend(gw, "default/bedrock-rerank")
    before = mock.stats()["requests"].get("/rerank", 0)
    r = co.rerank(model="bedrock-rerank", query="capital", documents=docs)
    # The mock answers 100 results a page: three pages, joined before translation.
    assert mock.stats()["requests"].get("/rerank", 0) - before == 3
    assert sorted(x.index for x in r.results) == list(range(250))
    scores = [x.relevance_score for x in r.results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    _, sent = last_request(mock, "bedrock")
    assert sent["nextToken"] == "mock-page:200"
    # Billed per query as Bedrock bills (three per 250 documents), not per page.
    assert abs(spend(gw, "default/bedrock-rerank") - before_spend - 0.003) < 1e-9


def test_jina_embeddings_through_the_openai_sdk(env, oai):
    gw, mock = env
    e = oai.embeddings.create(model="jina-embed", input=["one", "two"], dimensions=16)
    assert [len(d.embedding) for d in e.data] == [16, 16]
    assert e.usage.prompt_tokens == 2
    _, sent = last_request(mock, "jina")
    # The SDK's base64 encoding, in Jina's name.
    assert sent == {"model": "jina-embeddings-v3", "input": ["one", "two"], "dimensions": 16,
                    "embedding_type": "base64"}


def test_jina_binary_embeddings_pack_the_signs_of_the_float_ones(oai):
    texts = ["one two", "three"]
    floats = [d.embedding for d in oai.embeddings.create(model="jina-embed", input=texts, dimensions=16,
                                                         encoding_format="float").data]
    packed = {}
    for kind in ("ubinary", "binary"):
        e = oai.embeddings.create(model="jina-embed", input=texts, dimensions=16, encoding_format="float",
                                  extra_body={"embedding_type": kind})
        packed[kind] = [[int(x) for x in d.embedding] for d in e.data]
    # Eight dimensions a byte, the first in the highest bit; `binary` is the same byte less 128.
    expected = [[sum(0x80 >> i for i, x in enumerate(v[at:at + 8]) if x > 0) for at in range(0, 16, 8)]
                for v in floats]
    assert packed["ubinary"] == expected
    assert packed["binary"] == [[b - 128 for b in v] for v in expected]


def test_rerank_is_refused_where_the_provider_has_none(co):
    import cohere

    with pytest.raises(cohere.errors.BadRequestError) as e:
        co.rerank(model="openai-rerank", query="q", documents=["d"])
    message = json.dumps(e.value.body)
    assert "default/openai-rerank" in message and "default/openai" in message and "/v1/rerank" in message


def test_rerank_falls_back_from_cohere_to_voyage(co):
    r = co.rerank(model="flaky-rerank", query="capital of the United States", documents=DOCS, top_n=1)
    assert r.results[0].index == 1


def test_rerank_paths_for_each_client(env):
    """Cohere's v1 client calls /v1/rerank, LiteLLM's users /rerank: the same endpoint."""
    body = json.dumps({"model": "cohere-rerank", "query": "capital", "documents": DOCS}).encode()
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        req = urllib.request.Request(env[0].url + path, data=body,
                                     headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            assert len(json.loads(r.read())["results"]) == 3, path


def test_voyage_embeddings_through_the_openai_sdk(env, oai):
    gw, mock = env
    e = oai.embeddings.create(model="voyage-embed", input=["one", "two"], dimensions=16)
    assert [len(d.embedding) for d in e.data] == [16, 16]
    assert e.usage.prompt_tokens == 2
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider=voyage") as got:
        sent = json.loads(got.read())
    # OpenAI's names become Voyage's; the SDK's base64 encoding is Voyage's too.
    assert sent == {"model": "voyage-3.5", "input": ["one", "two"], "output_dimension": 16,
                    "encoding_format": "base64"}


def test_embeddings_fall_back_to_voyage_when_the_openai_quota_is_spent(env, oai):
    """The seed's example: text-embedding-3-small -> voyage fallback when quota is exhausted."""
    first = oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
    assert first.headers["x-switchyard-route"] == "default/text-embedding-3-small"
    second = oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
    assert second.headers["x-switchyard-route"] == "default/voyage-embed"
    assert second.headers["x-switchyard-fallback-depth"] == "1"
    assert len(second.parse().data[0].embedding) == 8


# --- 5. Images -----------------------------------------------------------------------------


def test_images_through_the_sdk(env, oai):
    gw, mock = env
    r = oai.images.generate(model="openai-image", prompt="a lighthouse at dusk", n=2, size="1024x1024")
    assert len(r.data) == 2 and r.data[0].b64_json
    assert r.usage.input_tokens == 4
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider=openai") as got:
        assert json.loads(got.read())["model"] == "gpt-image-1"
    r = oai.images.with_raw_response.generate(model="dalle", prompt="a red fox", response_format="url")
    img = r.parse()
    assert img.data[0].url.endswith(".png") and img.data[0].revised_prompt == "A picture of: a red fox"
    # Azure's deployment path, and a fallback to it on a 429.
    assert oai.images.generate(model="azure-image", prompt="x").data[0].url
    r = oai.images.with_raw_response.generate(model="flaky-image", prompt="y")
    assert r.headers["x-switchyard-route"] == "default/azure-image"
    with urllib.request.urlopen(f"{mock.url}/mock/last-request?provider=azure") as got:
        assert "/openai/deployments/dall-e-3/images/generations?api-version=" in got.headers["x-mock-path"]


def spend(gw, route):
    """The route's spend so far, in dollars, from /metrics."""
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as m:
        text = m.read().decode()
    lines = [l for l in text.splitlines() if l.startswith("switchyard_spend_usd_total") and f'route="{route}"' in l]
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines)


def dalle_spend(gw):
    return spend(gw, "default/dalle")


def test_dalle_images_are_priced_per_image(env, oai):
    gw, _ = env
    before = dalle_spend(gw)
    oai.images.generate(model="dalle", prompt="one image")
    # $0.04 an image: the backend's pricing.output is per million images.
    assert abs(dalle_spend(gw) - before - 0.04) < 1e-9


def test_images_on_vertex_imagen(env, oai):
    gw, mock = env
    before = spend(gw, "default/vertex-image")
    r = oai.images.generate(model="vertex-image", prompt="a lighthouse at dusk", n=2, size="1792x1024")
    assert len(r.data) == 2 and base64.b64decode(r.data[0].b64_json).startswith(b"\x89PNG")
    path, sent = last_request(mock, "vertex")
    assert path.endswith("/publishers/google/models/imagen-3.0-generate-002:predict")
    # DALL-E 3's widescreen size is Imagen's 16:9.
    assert sent == {"instances": [{"prompt": "a lighthouse at dusk"}],
                    "parameters": {"sampleCount": 2, "aspectRatio": "16:9", "outputOptions": {"mimeType": "image/png"}}}
    # $0.04 an image, from the backend's pricing.
    assert abs(spend(gw, "default/vertex-image") - before - 0.08) < 1e-9


def test_images_on_bedrock_amazon_models(env, oai):
    gw, mock = env
    before = spend(gw, "default/bedrock-image")
    r = oai.images.generate(model="bedrock-image", prompt="a red fox", n=2, size="1792x1024", quality="hd")
    assert len(r.data) == 2 and r.data[0].b64_json
    path, sent = last_request(mock, "bedrock")
    assert path == "/model/amazon.nova-canvas-v1%3A0/invoke"
    assert sent == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a red fox"},
                    "imageGenerationConfig": {"numberOfImages": 2, "width": 1792, "height": 1024, "quality": "premium"}}
    # Nova Canvas at the table's $0.06 an image.
    assert abs(spend(gw, "default/bedrock-image") - before - 0.12) < 1e-9
    # Titan takes a list of sizes: Bedrock's refusal reaches the client as a 400.
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="titan-image", prompt="a red fox", size="1792x1024")
    assert "1792x1024" in e.value.message
    assert oai.images.generate(model="titan-image", prompt="a red fox").data[0].b64_json
    # Stability: one image a request, priced at the table's $0.04 for Stable Image Core.
    before = spend(gw, "default/stability-image")
    r = oai.images.generate(model="stability-image", prompt="a red fox", size="1536x1024", output_format="jpeg")
    assert r.data[0].b64_json
    _, sent = last_request(mock, "bedrock")
    assert sent == {"prompt": "a red fox", "mode": "text-to-image", "aspect_ratio": "3:2", "output_format": "jpeg"}
    assert abs(spend(gw, "default/stability-image") - before - 0.04) < 1e-9
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="stability-image", prompt="a red fox", n=2)
    assert e.value.param == "n"
    # A throttled Bedrock falls back to Imagen.
    r = oai.images.with_raw_response.generate(model="flaky-bedrock-image", prompt="z")
    assert r.headers["x-switchyard-route"] == "default/vertex-image"


def test_images_on_bedrock_sdxl_in_its_older_body(env, oai):
    gw, mock = env
    before = spend(gw, "default/sdxl-image")
    r = oai.images.generate(model="sdxl-image", prompt="a red fox", size="1792x1024",
                            extra_body={"negative_prompt": "blur", "cfg_scale": 9, "steps": 30})
    assert len(r.data) == 1 and r.data[0].b64_json
    path, sent = last_request(mock, "bedrock")
    assert path == "/model/stability.stable-diffusion-xl-v1/invoke"
    # 1792x1024 (7:4) as SDXL's nearest size; the negative prompt as a prompt of weight -1.
    assert sent == {"text_prompts": [{"text": "a red fox", "weight": 1.0}, {"text": "blur", "weight": -1.0}],
                    "samples": 1, "width": 1344, "height": 768, "cfg_scale": 9, "steps": 30}
    assert abs(spend(gw, "default/sdxl-image") - before - 0.04) < 1e-9
    # Its filter is a content-policy refusal; a second image is refused before anything is sent.
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="sdxl-image", prompt="a blocked fox")
    assert e.value.code == "content_policy_violation", e.value
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="sdxl-image", prompt="a red fox", n=2)
    assert e.value.param == "n"


def test_image_urls_are_refused_where_the_provider_gives_none(oai):
    for model in ("vertex-image", "bedrock-image"):
        with pytest.raises(openai.BadRequestError) as e:
            oai.images.generate(model=model, prompt="x", response_format="url")
        assert e.value.param == "response_format" and "b64_json" in e.value.message, e.value.message


def test_images_are_refused_where_the_provider_has_none(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="anthropic-image", prompt="x")
    assert "default/anthropic-image" in e.value.message and "default/anthropic" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="openai-chat", prompt="x")
    assert "chat route" in e.value.message
