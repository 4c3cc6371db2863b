"""OpenAI's Files and Batch APIs through the gateway (issue 17 item 5), with the official openai SDK
against the real binary and two mock providers: an upload lives on one backend, and the ids the
gateway hands back route every later call there; a tampered id, an id of another namespace or of a
route the key may not use is refused; a batch's cost is counted once, when its output is fetched."""

import json

import openai
import pytest
import yaml

from harness import Gateway, MockProvider

KEY = "sk-batches-main"
OTHER_NS_KEY = "sk-batches-other-ns"
ONLY_B_KEY = "sk-batches-only-b"
ONE_RPM_KEY = "sk-batches-one-rpm"
# USD per million tokens of the route `batch-a`.
PRICE = {"input": 1000.0, "output": 2000.0}


def secret(name, ns, data):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "stringData": data}


def provider(name, type_, base_url, **spec):
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "baseUrl": base_url,
                     "credentials": {"secretRef": {"name": "provider-keys", "key": "apiKey"}}, **spec}}


def route(name, provider_name, model, pricing=None):
    backend = {"providerRef": {"name": provider_name}, "model": model}
    if pricing:
        backend["pricing"] = pricing
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": name, "backends": [backend]}}


def key(name, ns, value, **spec):
    return [secret(f"{name}-key", ns, {"key": value}),
            {"apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
             "metadata": {"name": name, "namespace": ns},
             "spec": {"secretRef": {"name": f"{name}-key"}, **spec}}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mock_a, mock_b = MockProvider(), MockProvider()
    config = tmp_path_factory.mktemp("batches")
    docs = [
        secret("provider-keys", "default", {"apiKey": "sk-mock-provider-key"}),
        provider("openai-a", "openai", f"{mock_a.url}/v1"),
        provider("openai-b", "openai", f"{mock_b.url}/v1"),
        provider("azure-b", "azure-openai", mock_b.url, apiVersion="2024-10-21"),
        route("batch-a", "openai-a", "gpt-4o-mini", PRICE),
        route("batch-b", "openai-b", "gpt-4o-mini"),
        route("batch-azure", "azure-b", "gpt-4o-mini-batch"),
        *key("main", "default", KEY),
        *key("only-b", "default", ONLY_B_KEY, allowedRoutes=["batch-b"]),
        *key("other", "other", OTHER_NS_KEY),
        *key("one-rpm", "default", ONE_RPM_KEY, limits={"rpm": 1}),
    ]
    (config / "all.yaml").write_text(yaml.safe_dump_all(docs))
    gw = Gateway(config)
    yield gw, mock_a, mock_b
    gw.stop()
    print(gw.output())
    mock_a.stop()
    mock_b.stop()


def client(gw, key=KEY, route=None):
    headers = {"x-switchyard-route": route} if route else None
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, default_headers=headers)


LINES = [
    {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}}
    for i, text in enumerate(["one two three", "four five"])
]
JSONL = ("\n".join(json.dumps(line) for line in LINES) + "\n").encode()


def spend(gw, route):
    import urllib.request

    with urllib.request.urlopen(gw.metrics_url + "/metrics") as r:
        text = r.read().decode()
    lines = [l for l in text.splitlines()
             if l.startswith("switchyard_spend_usd_total") and f'route="{route}"' in l]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def mock_files(mock):
    """The file ids a mock provider holds, asked directly."""
    import urllib.request

    req = urllib.request.Request(mock.url + "/v1/files", headers={"authorization": "Bearer sk-mock-provider-key"})
    with urllib.request.urlopen(req) as r:
        return [f["id"] for f in json.loads(r.read())["data"]]


def test_an_upload_and_its_batch_stay_on_one_backend_and_are_billed_once(env):
    gw, mock_a, mock_b = env
    oai = client(gw, route="batch-a")
    uploaded = oai.files.create(file=("in.jsonl", JSONL), purpose="batch")
    assert uploaded.id.startswith("file-sy-") and uploaded.purpose == "batch"
    # The file is on mock A (the route's backend), not on mock B.
    assert len(mock_files(mock_a)) == 1 and mock_files(mock_b) == []
    # The id routes back to mock A with no route header at all.
    plain = client(gw)
    assert plain.files.retrieve(uploaded.id).id == uploaded.id
    assert plain.files.content(uploaded.id).content == JSONL

    batch = plain.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    assert batch.id.startswith("batch_sy-") and batch.input_file_id == uploaded.id
    got = plain.batches.retrieve(batch.id)
    assert got.status == "completed" and got.request_counts.total == 2
    assert got.output_file_id and got.output_file_id.startswith("file-sy-")
    assert plain.batches.cancel(batch.id).id == batch.id
    assert batch.id in [b.id for b in client(gw, route="batch-a").batches.list().data]

    before = spend(gw, "default/batch-a")
    output = plain.files.content(got.output_file_id).content
    lines = [json.loads(l) for l in output.decode().splitlines()]
    assert [l["custom_id"] for l in lines] == ["req-0", "req-1"]
    prompt = sum(l["response"]["body"]["usage"]["prompt_tokens"] for l in lines)
    completion = sum(l["response"]["body"]["usage"]["completion_tokens"] for l in lines)
    expected = (prompt * PRICE["input"] + completion * PRICE["output"]) / 1e6
    assert abs(spend(gw, "default/batch-a") - before - expected) < 1e-9
    # Fetched again: the same bytes, counted once.
    assert plain.files.content(got.output_file_id).content == output
    assert abs(spend(gw, "default/batch-a") - before - expected) < 1e-9

    listed = [f.id for f in client(gw, route="batch-a").files.list().data]
    assert uploaded.id in listed and got.output_file_id in listed
    assert plain.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        plain.files.retrieve(uploaded.id)


def mock_content(mock, upstream_id):
    import urllib.request

    req = urllib.request.Request(f"{mock.url}/v1/files/{upstream_id}/content",
                                 headers={"authorization": "Bearer sk-mock-provider-key"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def test_batch_input_lines_name_routes_and_reach_the_provider_with_its_model(env):
    gw, mock_a, _ = env
    # The route's name, as in every other request; a provider model that is no route stays.
    lines = [{"custom_id": f"named-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "user", "content": "batch-a is a route"}]}}
             for i, model in enumerate(["batch-a", "gpt-4.1-mini", "batch-a"])]
    data = ("\n".join(json.dumps(l) for l in lines) + "\n").encode()
    oai = client(gw, route="batch-a")
    before = set(mock_files(mock_a))
    uploaded = oai.files.create(file=("named.jsonl", data), purpose="batch")
    [new] = set(mock_files(mock_a)) - before
    held = mock_content(mock_a, new)
    # Only the models changed, byte for byte everything else.
    assert held == data.replace(b'"model": "batch-a"', b'"model": "gpt-4o-mini"'), held
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    got = client(gw).batches.retrieve(batch.id)
    output = client(gw).files.content(got.output_file_id).content.decode().splitlines()
    models = [json.loads(l)["response"]["body"]["model"] for l in output]
    assert models == ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o-mini"]

    # A route served on another provider cannot run in a file that lives on this one.
    elsewhere = data.replace(b'"model": "gpt-4.1-mini"', b'"model": "batch-b"')
    with pytest.raises(openai.BadRequestError) as e:
        oai.files.create(file=("elsewhere.jsonl", elsewhere), purpose="batch")
    assert "line 2" in str(e.value) and "batch-b" in str(e.value) and "openai-a" in str(e.value)


def requests_by_operation(gw, route):
    import urllib.request

    with urllib.request.urlopen(gw.metrics_url + "/metrics") as r:
        text = r.read().decode()
    counts = {}
    for l in text.splitlines():
        if l.startswith("switchyard_requests_total{") and f'route="{route}"' in l:
            op = l.split('operation="', 1)[1].split('"', 1)[0]
            counts[op] = counts.get(op, 0) + float(l.rsplit(" ", 1)[1])
    return counts


def test_file_and_batch_calls_are_counted_by_operation(env):
    gw, _, _ = env
    before = requests_by_operation(gw, "default/batch-a")
    oai = client(gw, route="batch-a")
    uploaded = oai.files.create(file=("in.jsonl", JSONL), purpose="batch")
    oai.files.retrieve(uploaded.id)
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    oai.batches.retrieve(batch.id)
    after = requests_by_operation(gw, "default/batch-a")
    assert after.get("files", 0) - before.get("files", 0) == 2
    assert after.get("batches", 0) - before.get("batches", 0) == 2


def test_an_azure_backend_holds_files_and_batches_too(env):
    gw, _, _ = env
    oai = client(gw, route="batch-azure")
    uploaded = oai.files.create(file=("in.jsonl", JSONL), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    got = client(gw).batches.retrieve(batch.id)
    assert got.status == "completed"
    assert len(client(gw).files.content(got.output_file_id).content.decode().splitlines()) == 2


def test_tampered_foreign_and_forbidden_ids_are_refused(env):
    gw, mock_a, _ = env
    uploaded = client(gw, route="batch-a").files.create(file=("in.jsonl", JSONL), purpose="batch")
    body = uploaded.id[len("file-sy-"):]
    tampered = "file-sy-" + body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in [tampered, mock_files(mock_a)[-1], "file-sy-garbage"]:
        with pytest.raises(openai.NotFoundError):
            client(gw).files.retrieve(bad)
        with pytest.raises(openai.NotFoundError):
            client(gw).batches.create(input_file_id=bad, endpoint="/v1/chat/completions",
                                      completion_window="24h")
    # Another namespace's key cannot reach the file, even with its genuine id.
    with pytest.raises(openai.NotFoundError):
        client(gw, key=OTHER_NS_KEY).files.retrieve(uploaded.id)
    # A key of the namespace that may not use the route the file lives on is refused.
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, key=ONLY_B_KEY).files.content(uploaded.id)
    # And a list shows only what the asking backend's namespace owns.
    assert uploaded.id not in [f.id for f in client(gw, key=ONLY_B_KEY, route="batch-b").files.list().data]


def test_uploads_need_a_key(env):
    gw, _, _ = env
    with pytest.raises(openai.AuthenticationError):
        client(gw, key="sk-nobody").files.create(file=("in.jsonl", JSONL), purpose="batch")


def test_file_calls_count_against_the_keys_limits(env):
    gw, _, _ = env
    oai = client(gw, key=ONE_RPM_KEY, route="batch-b")
    oai.files.list()
    with pytest.raises(openai.RateLimitError):
        oai.files.create(file=("in.jsonl", JSONL), purpose="batch")


def test_uploads_past_max_request_bytes_are_refused_whether_sized_or_streamed(env):
    import httpx

    gw, _, _ = env
    big = b"x" * (11 * 1024 * 1024)  # past the default maxRequestBytes (10 MiB)
    with pytest.raises(openai.APIStatusError) as e:
        client(gw, route="batch-b").files.create(file=("big.jsonl", big), purpose="batch")
    assert e.value.status_code == 413

    # Chunked, with no length to refuse up front: cut off while it streams to the provider.
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    r = httpx.post(gw.url + "/v1/files", content=body(), timeout=30,
                   headers={"authorization": f"Bearer {KEY}", "x-switchyard-route": "batch-b",
                            "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413, r.text


def test_a_batch_request_of_too_many_json_values_is_refused_before_it_is_parsed(env):
    import httpx

    # 600,000 values in `metadata`-like filler: over the default maxRequestValues (500,000).
    gw, _, _ = env
    body = json.dumps({"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                       "completion_window": "24h", "extra": [0] * 600_000}).encode()
    r = httpx.post(gw.url + "/v1/batches", content=body, timeout=30,
                   headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "request_too_large", r.text
