"""Pass-through (`/passthrough/{provider}/{path}`) against the real binary: the mock provider
(`switchyard mock-provider`) for paths the gateway does not model and usage that is charged,
and a small recording upstream here for what reaches the provider (headers, path, query,
body as it streams) and for an answer that streams slowly."""

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from harness import REPO, MockProvider

ALLOWED = "sk-pt-allowed"
DENIED = "sk-pt-denied"
LIMITED = "sk-pt-limited"
BUDGETED = "sk-pt-budgeted"
MSG = [{"role": "user", "content": "hi there"}]


class Upstream:
    """An HTTP/1.1 upstream that records each request. `/.../stream` answers one event, then
    waits for `release` before the last; a chunked request body sets `got_first` on its first
    chunk."""

    def __init__(self):
        self.requests = []
        self.release = threading.Event()
        self.got_first = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def body(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                        upstream.got_first.set()
                return self.rfile.read(int(self.headers.get("content-length", 0)))

            def serve(self):
                path, _, query = self.path.partition("?")
                body = self.body()
                upstream.requests.append({
                    "method": self.command, "path": path, "query": query, "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                })
                if path.endswith("/stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for event, wait in ((b"data: first\n\n", True), (b"data: last\n\n", False)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        if wait:
                            upstream.release.wait(10)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                out = json.dumps({"path": path, "received": len(body)}).encode()
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.send_header("x-upstream", "echo")
                self.send_header("keep-alive", "timeout=5")
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def manifests(mock_port, echo_port):
    def provider(name, kind, base, ns="default", secret="provider-keys"):
        return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"type": kind, "baseUrl": base,
                         "credentials": {"secretRef": {"name": secret, "key": name}}}}

    def key(name, value, spec):
        return [{"apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
                 "metadata": {"name": name, "namespace": "default"},
                 "spec": {"secretRef": {"name": f"{name}-key"}, "labels": {"team": "pt"}, **spec}},
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-key", "namespace": "default"},
                 "stringData": {"key": value}}]

    echo = f"http://127.0.0.1:{echo_port}/base"
    docs = [
        provider("mock", "openai", f"http://127.0.0.1:{mock_port}/v1"),
        provider("mockclaude", "anthropic", f"http://127.0.0.1:{mock_port}"),
        provider("echo", "openai", echo),
        provider("claude", "anthropic", echo),
        provider("azure", "azure-openai", echo),
        provider("hidden", "openai", echo, ns="other", secret="other-keys"),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "provider-keys", "namespace": "default"},
         "stringData": {"mock": "sk-provider-mock", "mockclaude": "sk-provider-mockclaude", "echo": "sk-provider-echo",
                        "claude": "sk-provider-claude", "azure": "sk-provider-azure"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other-keys", "namespace": "other"},
         "stringData": {"hidden": "sk-provider-hidden"}},
        # The price of mock-gpt: a route's backend on the same Provider names it.
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": "chat", "namespace": "default"},
         "spec": {"model": "chat", "backends": [{"providerRef": {"name": "mock"}, "model": "mock-gpt",
                                                  "pricing": {"input": 1000, "output": 1000}}]}},
        # Chat on the recording upstream: what an OpenAI-type and an Azure backend are sent.
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": "echo-chat", "namespace": "default"},
         "spec": {"model": "echo-chat", "backends": [{"providerRef": {"name": "echo"}, "model": "up/model-\u00e9"}]}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": "echo-azure", "namespace": "default"},
         "spec": {"model": "echo-azure", "backends": [{"providerRef": {"name": "azure"}, "model": "my-deployment"}]}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": "claude", "namespace": "default"},
         "spec": {"model": "claude", "backends": [{"providerRef": {"name": "mockclaude"}, "model": "mock-claude",
                                                    "pricing": {"input": 1000, "output": 2000}}]}},
    ]
    # Bedrock (SigV4) and Vertex AI (an OAuth token from the mock's /token) on the mock provider,
    # with the test credentials of examples/providers; `forged` signs with a wrong secret key.
    secrets = [d for d in yaml.safe_load_all((REPO / "examples/providers/secrets.yaml").read_text())
               if d["metadata"]["name"] in ("aws-credentials", "vertex-service-account")]
    for d in secrets:
        for k, v in d["stringData"].items():
            d["stringData"][k] = v.replace("127.0.0.1:9999", f"127.0.0.1:{mock_port}")
    mock_url = f"http://127.0.0.1:{mock_port}"
    docs += secrets + [
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider", "metadata": {"name": "bedrock", "namespace": "default"},
         "spec": {"type": "bedrock", "baseUrl": mock_url, "region": "us-east-1",
                  "credentials": {"secretRef": {"name": "aws-credentials"}}}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider", "metadata": {"name": "forged", "namespace": "default"},
         "spec": {"type": "bedrock", "baseUrl": mock_url, "region": "us-east-1",
                  "credentials": {"secretRef": {"name": "forged-aws"}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "forged-aws", "namespace": "default"},
         "stringData": {"accessKeyId": "AKIDSWITCHYARDTEST", "secretAccessKey": "not-the-secret"}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Provider", "metadata": {"name": "vertex", "namespace": "default"},
         "spec": {"type": "vertex", "baseUrl": mock_url, "region": "europe-west4", "vertex": {"project": "switchyard-test"},
                  "credentials": {"secretRef": {"name": "vertex-service-account"}}}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "nova", "namespace": "default"},
         "spec": {"model": "nova", "backends": [{"providerRef": {"name": "bedrock"}, "model": "amazon.nova-lite-v1:0",
                                                  "pricing": {"input": 1000, "output": 3000}}]}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "gemini", "namespace": "default"},
         "spec": {"model": "gemini", "backends": [{"providerRef": {"name": "vertex"}, "model": "gemini-2.5-flash",
                                                    "pricing": {"input": 2000, "output": 5000}}]}},
    ]
    docs += key("allowed", ALLOWED, {"allowedPassthrough": ["mock", "mockclaude", "echo", "claude", "azure", "hidden",
                                                             "bedrock", "forged", "vertex"]})
    docs += key("denied", DENIED, {})
    docs += key("limited", LIMITED, {"allowedPassthrough": ["echo"], "limits": {"rpm": 2}})
    docs += key("budgeted", BUDGETED, {"allowedPassthrough": ["mock", "echo"],
                                       "budget": {"maxSpend": 0.001, "period": "daily"}})
    return docs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from harness import Gateway

    mock, upstream = MockProvider(), Upstream()
    config = tmp_path_factory.mktemp("passthrough")
    (config / "all.yaml").write_text(yaml.safe_dump_all(manifests(mock.port, upstream.port)))
    gw = Gateway(config, env={"SWITCHYARD_LOG_FORMAT": "json", "SWITCHYARD_LOG": "info"})
    yield gw, mock, upstream
    gw.stop()
    mock.stop()
    upstream.stop()


def call(gw, key, method, path, **kw):
    headers = {"authorization": f"Bearer {key}", **kw.pop("headers", {})}
    return httpx.request(method, gw.url + path, headers=headers, timeout=30, **kw)


def access_lines(gw):
    out = []
    for line in gw.output().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("target") == "switchyard::access":
            out.append(doc["fields"])
    return out


def metrics(gw):
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as r:
        return r.read().decode()


def test_an_allowed_key_reaches_a_path_the_gateway_does_not_model(env):
    gw, _, _ = env
    r = call(gw, ALLOWED, "GET", "/passthrough/mock/models/mock-gpt")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "mock-gpt"
    assert r.headers["x-request-id"]


def test_a_chat_body_reaches_an_openai_upstream_as_the_client_wrote_it(env):
    """The client's bytes go upstream with the model replaced (and stream usage appended): its
    field order, spacing, escapes and number spellings reach the provider; an Azure backend (the
    model is in its path) gets the body without the model."""
    gw, _, upstream = env
    body = (b'{ "messages": [{"role": "user", "content": "caf\\u00e9 \\"model\\": 1", "model": "x"}],\n'
            b'  "model" :  "echo-chat" , "temperature": 0.50, "zz": null}')
    headers = {"content-type": "application/json"}
    r = call(gw, ALLOWED, "POST", "/v1/chat/completions", content=body, headers=headers)
    assert r.status_code < 300, r.text
    sent = upstream.requests[-1]
    assert sent["path"] == "/base/chat/completions"
    assert sent["body"] == body.replace(b'"echo-chat"', '"up/model-\u00e9"'.encode()), sent["body"]
    assert json.loads(sent["body"])["model"] == "up/model-\u00e9"

    # A stream: the usage the gateway asks every upstream for is appended to the same bytes.
    # (This upstream answers JSON, not events, so the client is answered 502; what was sent is
    # the point.)
    stream = body.replace(b'"zz": null}', b'"zz": null, "stream": true}')
    call(gw, ALLOWED, "POST", "/v1/chat/completions", content=stream, headers=headers)
    sent = upstream.requests[-1]
    assert sent["body"] == stream.replace(b'"echo-chat"', '"up/model-\u00e9"'.encode()).replace(
        b"true}", b'true,"stream_options":{"include_usage":true}}'), sent["body"]

    r = call(gw, ALLOWED, "POST", "/v1/chat/completions", content=body.replace(b"echo-chat", b"echo-azure"),
             headers=headers)
    assert r.status_code < 300, r.text
    sent = upstream.requests[-1]
    assert sent["path"] == "/base/openai/deployments/my-deployment/chat/completions"
    expected = json.loads(body)
    del expected["model"]
    assert json.loads(sent["body"]) == expected


def test_usage_of_a_json_answer_is_charged(env):
    gw, _, _ = env
    r = call(gw, ALLOWED, "POST", "/passthrough/mock/chat/completions",
             json={"model": "mock-gpt", "messages": MSG}, headers={"x-request-id": "pt-chat-1"})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    cost = (u["prompt_tokens"] + u["completion_tokens"]) * 0.001
    line = next(l for l in access_lines(gw) if l["request_id"] == "pt-chat-1")
    assert line["operation"] == "passthrough" and line["route"] == "passthrough"
    assert line["backend"] == "default/mock" and line["provider"] == "openai" and line["status"] == 200
    assert line["key"] == "default/allowed"
    assert line["prompt_tokens"] == u["prompt_tokens"] and line["completion_tokens"] == u["completion_tokens"]
    assert abs(line["cost_usd"] - cost) < 1e-9 and line["cost_unknown"] is False
    text = metrics(gw)
    assert 'switchyard_requests_total{backend="default/mock",operation="passthrough",provider="openai",route="passthrough",status="2xx"}' in text
    assert 'switchyard_spend_usd_total{route="passthrough",team="pt"}' in text


def access_line(gw, request_id):
    deadline = time.monotonic() + 5
    while True:
        line = next((l for l in access_lines(gw) if l["request_id"] == request_id), None)
        if line or time.monotonic() > deadline:
            return line
        time.sleep(0.02)


def sse_events(gw, path, body, request_id, headers=None):
    with httpx.stream("POST", gw.url + path, json=body, timeout=30,
                      headers={"authorization": f"Bearer {ALLOWED}", "x-request-id": request_id, **(headers or {})}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(l[5:]) for l in r.iter_lines() if l.startswith("data:") and l.strip() != "data: [DONE]"]


def test_usage_of_an_event_stream_is_charged(env):
    gw, _, _ = env
    # OpenAI's chunks: the usage comes in the last one (stream_options.include_usage).
    events = sse_events(gw, "/passthrough/mock/chat/completions",
                        {"model": "mock-gpt", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}},
                        "pt-stream-1")
    u = events[-1]["usage"]
    line = access_line(gw, "pt-stream-1")
    assert line["prompt_tokens"] == u["prompt_tokens"] and line["completion_tokens"] == u["completion_tokens"], line
    assert abs(line["cost_usd"] - (u["prompt_tokens"] + u["completion_tokens"]) * 0.001) < 1e-9
    # Anthropic's Messages stream: input tokens in message_start, output in message_delta.
    events = sse_events(gw, "/passthrough/mockclaude/v1/messages",
                        {"model": "mock-claude", "max_tokens": 50, "messages": MSG, "stream": True},
                        "pt-stream-2", {"anthropic-version": "2023-06-01"})
    prompt = next(e for e in events if e["type"] == "message_start")["message"]["usage"]["input_tokens"]
    completion = [e for e in events if e["type"] == "message_delta"][-1]["usage"]["output_tokens"]
    line = access_line(gw, "pt-stream-2")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt, completion), line
    assert abs(line["cost_usd"] - (prompt * 0.001 + completion * 0.002)) < 1e-9
    # Without the usage chunk: nothing to read, the cost is unknown (never guessed as zero).
    sse_events(gw, "/passthrough/mock/chat/completions", {"model": "mock-gpt", "messages": MSG, "stream": True},
               "pt-stream-3")
    line = access_line(gw, "pt-stream-3")
    assert line["cost_unknown"] is True and "cost_usd" not in line, line


def test_an_answer_without_usage_has_an_unknown_cost(env):
    gw, _, _ = env
    r = call(gw, ALLOWED, "GET", "/passthrough/mock/models", headers={"x-request-id": "pt-models-1"})
    assert r.status_code == 200
    line = next(l for l in access_lines(gw) if l["request_id"] == "pt-models-1")
    assert line["cost_unknown"] is True and "cost_usd" not in line


def test_the_providers_key_goes_upstream_and_the_clients_does_not(env):
    gw, _, upstream = env
    r = call(gw, ALLOWED, "POST", "/passthrough/echo/v1/files/f-1/content?purpose=batch&x=%20y",
             content=b"raw bytes", headers={"content-type": "application/octet-stream",
                                            "x-api-key": ALLOWED, "x-custom": "kept"})
    assert r.status_code == 201, r.text
    assert r.json() == {"path": "/base/v1/files/f-1/content", "received": 9}
    assert r.headers["x-upstream"] == "echo"
    assert "keep-alive" not in r.headers
    seen = upstream.requests[-1]
    assert seen["method"] == "POST" and seen["query"] == "purpose=batch&x=%20y"
    assert seen["body"] == b"raw bytes"
    h = seen["headers"]
    assert h["authorization"] == "Bearer sk-provider-echo"
    assert h["content-type"] == "application/octet-stream" and h["x-custom"] == "kept"
    assert "x-api-key" not in h
    assert not any(ALLOWED in v for v in h.values()), h


def test_each_provider_type_gets_its_own_header(env):
    gw, _, upstream = env
    r = call(gw, ALLOWED, "POST", "/passthrough/claude/v1/messages/count_tokens",
             json={"model": "claude-x", "messages": MSG}, headers={"anthropic-version": "2023-01-01"})
    assert r.status_code == 201, r.text
    h = upstream.requests[-1]["headers"]
    assert h["x-api-key"] == "sk-provider-claude" and h["anthropic-version"] == "2023-01-01"
    assert "authorization" not in h
    r = call(gw, ALLOWED, "GET", "/passthrough/azure/openai/files?api-version=2024-10-21")
    assert r.status_code == 201, r.text
    seen = upstream.requests[-1]
    assert seen["headers"]["api-key"] == "sk-provider-azure" and "authorization" not in seen["headers"]
    assert seen["path"] == "/base/openai/files" and seen["query"] == "api-version=2024-10-21"


def test_keys_reach_only_the_providers_they_name(env):
    gw, _, _ = env
    r = call(gw, DENIED, "GET", "/passthrough/mock/models")
    assert r.status_code == 403
    assert "allowedPassthrough" in r.json()["error"]["message"]
    # A Provider of another namespace answers as one that does not exist, even when named.
    hidden = call(gw, ALLOWED, "GET", "/passthrough/hidden/v1/models")
    missing = call(gw, ALLOWED, "GET", "/passthrough/nowhere/v1/models")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"] == missing.json()["error"]["message"].replace("nowhere", "hidden")
    assert set(hidden.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(gw.url + "/passthrough/mock/models")
    assert r.status_code == 401
    # Paths may not climb out of the Provider's base URL.
    r = call(gw, ALLOWED, "GET", "/passthrough/echo/v1/%2e%2e/%2E%2E/admin")
    assert r.status_code == 400, r.text


def test_the_keys_rpm_applies(env):
    gw, _, _ = env
    rs = [call(gw, LIMITED, "GET", "/passthrough/echo/v1/anything") for _ in range(3)]
    assert [r.status_code for r in rs] == [201, 201, 429], [r.text for r in rs]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in rs] == ["1", "0", "0"]
    r = call(gw, LIMITED, "GET", "/passthrough/echo/v1/anything")
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_spent_budget_refuses_pass_through(env):
    gw, _, _ = env
    # Nothing is reserved: the first call runs, and its cost ($0.007) spends the $0.001.
    r = call(gw, BUDGETED, "POST", "/passthrough/mock/chat/completions",
             json={"model": "mock-gpt", "messages": MSG})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while True:
        r = call(gw, BUDGETED, "GET", "/passthrough/echo/v1/anything")
        if r.status_code == 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "budget_exceeded"


def test_bodies_stream_both_ways(env):
    gw, _, upstream = env
    upstream.release.clear()
    with httpx.stream("GET", gw.url + "/passthrough/echo/v1/stream", timeout=30,
                      headers={"authorization": f"Bearer {ALLOWED}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        chunks = r.iter_raw()
        started = time.monotonic()
        first = next(chunks)
        # The upstream holds its last event back for 10 s unless released: the first event came
        # through on its own, not buffered with the rest.
        assert time.monotonic() - started < 5 and first == b"data: first\n\n"
        upstream.release.set()
        rest = b"".join(chunks)
    assert (first + rest) == b"data: first\n\ndata: last\n\n"

    upstream.got_first.clear()

    def body():
        yield b"part-one;"
        # The second part waits until the upstream has read the first through the gateway.
        assert upstream.got_first.wait(10), "the request body was held back"
        yield b"part-two"

    r = call(gw, ALLOWED, "PUT", "/passthrough/echo/v1/uploads/u-1", content=body())
    assert r.status_code == 201, r.text
    assert r.json()["received"] == len(b"part-one;part-two")
    assert upstream.requests[-1]["body"] == b"part-one;part-two"


CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi there from pass-through"}]}],
            "inferenceConfig": {"maxTokens": 50}}
NOVA = "/passthrough/bedrock/model/amazon.nova-lite-v1%3A0"


def test_bedrock_requests_are_signed_over_their_body_and_charged(env):
    gw, _, _ = env
    # Converse: the mock checks the SigV4 signature over this exact body; usage from the JSON.
    r = call(gw, ALLOWED, "POST", NOVA + "/converse", json=CONVERSE, headers={"x-request-id": "pt-bedrock-1"})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    assert r.json()["output"]["message"]["role"] == "assistant"
    line = access_line(gw, "pt-bedrock-1")
    assert line["backend"] == "default/bedrock" and line["provider"] == "bedrock", line
    assert (line["prompt_tokens"], line["completion_tokens"]) == (u["inputTokens"], u["outputTokens"]), line
    # Priced at the route's backend serving the model the path names.
    assert abs(line["cost_usd"] - (u["inputTokens"] * 0.001 + u["outputTokens"] * 0.003)) < 1e-9, line
    # InvokeModel (Titan embeddings): the tokens Bedrock counts in its response headers.
    r = call(gw, ALLOWED, "POST", "/passthrough/bedrock/model/amazon.titan-embed-text-v2:0/invoke",
             json={"inputText": "one two three four"}, headers={"x-request-id": "pt-bedrock-2"})
    assert r.status_code == 200, r.text
    assert len(r.json()["embedding"]) > 0
    line = access_line(gw, "pt-bedrock-2")
    assert line["prompt_tokens"] == int(r.headers["x-amzn-bedrock-input-token-count"]) > 0, line
    # The same request signed with the wrong secret: the mock's verdict, Bedrock's 403.
    r = call(gw, ALLOWED, "POST", "/passthrough/forged/model/amazon.nova-lite-v1%3A0/converse", json=CONVERSE)
    assert r.status_code == 403, r.text
    assert r.headers["x-amzn-errortype"].startswith("InvalidSignatureException"), r.headers
    assert "signature" in r.json()["message"], r.text


def test_a_bedrock_event_stream_streams_back_untouched_and_is_charged(env):
    gw, _, _ = env
    whole = call(gw, ALLOWED, "POST", NOVA + "/converse", json=CONVERSE).json()["usage"]
    with httpx.stream("POST", gw.url + NOVA + "/converse-stream", json=CONVERSE, timeout=30,
                      headers={"authorization": f"Bearer {ALLOWED}", "x-request-id": "pt-bedrock-3"}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
        raw = b"".join(r.iter_raw())
    # AWS's binary frames, as the mock wrote them: a prelude whose total length adds up.
    at, frames = 0, 0
    while at < len(raw):
        at += int.from_bytes(raw[at:at + 4], "big")
        frames += 1
    assert at == len(raw) and frames > 3 and b"metadata" in raw
    line = access_line(gw, "pt-bedrock-3")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (whole["inputTokens"], whole["outputTokens"]), line
    assert line["cost_unknown"] is False


def test_vertex_requests_carry_the_providers_oauth_token_and_are_charged(env):
    gw, mock, _ = env
    path = ("/passthrough/vertex/v1/projects/switchyard-test/locations/europe-west4/publishers/google/models/"
            "gemini-2.5-flash:generateContent")
    body = {"contents": [{"role": "user", "parts": [{"text": "hi there from vertex"}]}]}
    r = call(gw, ALLOWED, "POST", path, json=body, headers={"x-request-id": "pt-vertex-1"})
    assert r.status_code == 200, r.text
    u = r.json()["usageMetadata"]
    # The token came from the service account's token endpoint (the mock's /token).
    assert mock.stats()["requests"].get("/token", 0) >= 1, mock.stats()
    line = access_line(gw, "pt-vertex-1")
    assert line["provider"] == "vertex" and line["prompt_tokens"] == u["promptTokenCount"], line
    assert line["completion_tokens"] == u["candidatesTokenCount"], line
    assert abs(line["cost_usd"] - (u["promptTokenCount"] * 0.002 + u["candidatesTokenCount"] * 0.005)) < 1e-9, line
    # The client's own bearer (its virtual key) never reaches Vertex: without the gateway's
    # token, the mock answers 401.
    r = httpx.post(mock.url + path.removeprefix("/passthrough/vertex"), json=body)
    assert r.status_code == 401


def test_a_bedrock_body_is_signed_whole_within_max_request_bytes(env):
    gw, mock, _ = env
    before = mock.stats()["requests_total"]

    def body():  # chunked, past the default maxRequestBytes (10 MiB), with no length up front
        for _ in range(11):
            yield b" " * (1024 * 1024)

    r = call(gw, ALLOWED, "POST", NOVA + "/converse", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    # Nothing was sent: a signature needs the whole body first.
    assert mock.stats()["requests_total"] == before
