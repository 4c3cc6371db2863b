"""Egress through a forward proxy: the gateway honours HTTP(S)_PROXY / NO_PROXY from its
environment (read once at start-up) for its calls to providers, proxy credentials included.

Provider calls not covered by a proxy take the direct client; these check both paths from the
outside: what a real forward proxy on 127.0.0.1 saw, and what the client got."""

import base64
import http.client
import http.server
import threading
import urllib.parse

import openai
import pytest

from harness import MockProvider, REPO, Gateway

KEY = "sk-switchyard-demo"


class ForwardProxy(http.server.ThreadingHTTPServer):
    """A plain HTTP forward proxy (absolute-form requests), recording what passed through."""

    daemon_threads = True

    def __init__(self):
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                target = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.seen.append({
                    "target": self.path,
                    "proxy_authorization": self.headers.get("proxy-authorization"),
                    "upstream_key": self.headers.get("authorization"),
                })
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")}
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]


@pytest.fixture(scope="module")
def mock():
    m = MockProvider()
    yield m
    m.stop()


@pytest.fixture
def proxy():
    p = ForwardProxy()
    yield p
    p.shutdown()


def providers_config(tmp_path, mock):
    config = tmp_path / "providers"
    config.mkdir()
    for f in (REPO / "examples" / "providers").glob("*.yaml"):
        (config / f.name).write_text(f.read_text().replace("127.0.0.1:9999", f"127.0.0.1:{mock.port}"))
    return config


def chat(gw, model):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "via the proxy"}])


def test_provider_calls_go_through_the_environments_proxy_with_its_credentials(tmp_path, mock, proxy):
    gw = Gateway(providers_config(tmp_path, mock),
                 env={"HTTP_PROXY": f"http://egress:s3cret@127.0.0.1:{proxy.port}", "NO_PROXY": ""})
    try:
        r = chat(gw, "openai-chat")
        assert r.choices[0].message.content == "Hello! You said: via the proxy"
        r = chat(gw, "anthropic-chat")
        assert "via the proxy" in r.choices[0].message.content
    finally:
        gw.stop()
    assert [s["target"] for s in proxy.seen] == [
        f"http://127.0.0.1:{mock.port}/v1/chat/completions",
        f"http://127.0.0.1:{mock.port}/v1/messages",
    ]
    expected = "Basic " + base64.b64encode(b"egress:s3cret").decode()
    assert all(s["proxy_authorization"] == expected for s in proxy.seen), proxy.seen
    # The provider's own credentials still reach the provider.
    assert proxy.seen[0]["upstream_key"] and proxy.seen[0]["upstream_key"].startswith("Bearer ")


def test_no_proxy_hosts_are_called_directly(tmp_path, mock, proxy):
    gw = Gateway(providers_config(tmp_path, mock),
                 env={"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "localhost,127.0.0.1"})
    try:
        before = mock.stats()
        r = chat(gw, "openai-chat")
        assert r.choices[0].message.content == "Hello! You said: via the proxy"
        assert mock.stats() != before
    finally:
        gw.stop()
    assert proxy.seen == []


def test_an_unreachable_proxy_is_a_connect_error_not_a_direct_call(tmp_path, mock):
    # Nothing listens on the proxy's port: the call must fail, not quietly bypass the proxy.
    dead = ForwardProxy()
    port = dead.port
    dead.shutdown()
    dead.server_close()
    gw = Gateway(providers_config(tmp_path, mock), env={"HTTP_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": ""})
    try:
        before = mock.stats()
        with pytest.raises(openai.APIStatusError) as e:
            chat(gw, "openai-chat")
        assert e.value.status_code in (502, 503), e.value
        assert mock.stats() == before
    finally:
        gw.stop()


def test_a_provider_with_http_version_http2_is_called_over_h2c(tmp_path, mock):
    # `httpVersion: http2` on a plain-http baseUrl: h2c with prior knowledge, whole answers and
    # streams; the default (auto) speaks HTTP/1.1 to the same server.
    config = providers_config(tmp_path, mock)
    providers = config / "providers.yaml"
    text = providers.read_text()
    openai_spec = f"  type: openai\n  baseUrl: http://127.0.0.1:{mock.port}/v1\n"
    assert text.count(openai_spec) == 1
    providers.write_text(text.replace(openai_spec, openai_spec + "  httpVersion: http2\n"))
    gw = Gateway(config)
    try:
        before = mock.stats()["http2_requests"]
        r = chat(gw, "openai-chat")
        assert r.choices[0].message.content == "Hello! You said: via the proxy"
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        chunks = list(client.chat.completions.create(
            model="openai-chat", stream=True, messages=[{"role": "user", "content": "streamed"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("streamed")
        # Both over HTTP/2 (the stats request itself is HTTP/1.1).
        assert mock.stats()["http2_requests"] == before + 2
        before = mock.stats()["http2_requests"]
        r = chat(gw, "anthropic-chat")
        assert "via the proxy" in r.choices[0].message.content
        assert mock.stats()["http2_requests"] == before, "a provider left on auto spoke HTTP/2 over plain http"
    finally:
        gw.stop()
