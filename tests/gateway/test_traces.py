"""OpenTelemetry traces end to end: a gateway with OTEL_EXPORTER_OTLP_ENDPOINT set exports a SERVER
span per request and a CLIENT span per upstream attempt to a tiny OTLP/HTTP receiver (decoded with
the `opentelemetry-proto` package), driven by the official `openai` SDK. Upstreams are the mock
provider (retries, fallbacks, streams) and a recording upstream that keeps the headers it got (the
`traceparent` of each attempt). Without an endpoint nothing is exported and nothing is propagated."""

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from harness import Gateway, MockProvider

KEY = "sk-switchyard-demo"
UPSTREAM_KEY = "sk-upstream-secret"
# Marked text the spans must never carry.
PROMPT = "PROMPT-MARKER-do-not-trace"
COMPLETION = "COMPLETION-MARKER-do-not-trace"

SERVER, CLIENT = 2, 3  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf."""

    def __init__(self):
        self.requests = []  # decoded ExportTraceServiceRequest
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with collector.lock:
                    collector.requests.append((self.path, self.headers.get("content-type"), req))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self):
        """Every span received: (resource attributes, span)."""
        with self.lock:
            reqs = [r for _, _, r in self.requests]
        return [(attrs(rs.resource.attributes), s) for r in reqs for rs in r.resource_spans
                for ss in rs.scope_spans for s in ss.spans]

    def wait(self, trace_id, count, timeout=10.0):
        """The spans of a trace once `count` of them arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for _, s in self.spans() if s.trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} spans of trace {trace_id} arrived")
            time.sleep(0.05)

    def trace(self, trace_id, count, gw=None, timeout=10.0):
        """The spans of a trace, once `count` of them arrived and anything later would have: a
        span of the trace arriving late would be a bug, so the count is taken again after a
        later request's span (spans are exported in the order they end), or, with `gw=None`,
        once the gateway has exited (nothing can arrive after its shutdown flush)."""
        self.wait(trace_id, count, timeout)
        if gw is not None:
            fence, _, header = traceparent()
            with pytest.raises(openai.NotFoundError):
                client(gw).chat.completions.create(
                    model="trace-fence", messages=[{"role": "user", "content": "x"}],
                    extra_headers={"traceparent": header})
            self.wait(fence, 1, timeout)
        return [s for _, s in self.spans() if s.trace_id.hex() == trace_id]

    def stop(self):
        self.server.shutdown()


class Recorder:
    """An OpenAI-compatible upstream that answers one fixed completion and keeps request headers."""

    def __init__(self):
        self.headers = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                out = json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": "upstream-model-2024-08-06",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": COMPLETION}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = serve(Handler)
        self.port = self.server.server_address[1]

    def stop(self):
        self.server.shutdown()


def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


def config(dest, mock_port, recorder_port):
    (dest / "fleet.yaml").write_text(f"""
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: demo, namespace: default}}
spec:
  secretRef: {{name: keys, key: demo}}
  labels: {{team: demo}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: default}}
stringData: {{demo: {KEY}, upstream: {UPSTREAM_KEY}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: default}}
spec:
  type: openai
  baseUrl: http://127.0.0.1:{mock_port}/v1
  credentials: {{secretRef: {{name: keys, key: upstream}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: recorder, namespace: default}}
spec:
  type: openai
  baseUrl: http://127.0.0.1:{recorder_port}/v1
  credentials: {{secretRef: {{name: keys, key: upstream}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: traced, namespace: default}}
spec:
  model: traced
  backends: [{{providerRef: {{name: recorder}}, model: upstream-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: streamed, namespace: default}}
spec:
  model: streamed
  backends: [{{providerRef: {{name: mock}}, model: gpt-4o-mini}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: flaky, namespace: default}}
spec:
  model: flaky
  backends: [{{providerRef: {{name: mock}}, model: mock-flaky-2}}]
  retries: {{attempts: 3, backoff: 50ms}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: limited, namespace: default}}
spec:
  model: limited
  backends: [{{providerRef: {{name: mock}}, model: mock-429}}]
  retries: {{attempts: 0}}
  fallbacks: [{{route: backup, on: [rate-limit]}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: backup, namespace: default}}
spec:
  model: backup
  backends: [{{providerRef: {{name: mock}}, model: gpt-4o-mini}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: hedged, namespace: default}}
spec:
  model: hedged
  backends:
    - {{name: primary, providerRef: {{name: mock}}, model: mock-slow-3s, priority: 0}}
    - {{name: standby, providerRef: {{name: mock}}, model: gpt-4o-mini, priority: 1}}
  hedging: {{enabled: true, after: 200ms}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: broken, namespace: default}}
spec:
  model: broken
  backends: [{{providerRef: {{name: mock}}, model: mock-500}}]
  retries: {{attempts: 0}}
""")
    return dest


OTEL_OFF = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    collector, recorder, mock = Collector(), Recorder(), MockProvider()
    folder = config(tmp_path_factory.mktemp("traces"), mock.port, recorder.port)
    gw = Gateway(folder, env={
        **OTEL_OFF,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "OTEL_SERVICE_NAME": "",
        "SWITCHYARD_LOG_FORMAT": "json",
    })
    yield gw, collector, recorder, mock
    gw.stop()
    print(gw.output()[-5000:])
    for p in (collector, recorder, mock):
        p.stop()


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def traceparent():
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def one(spans, kind):
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def test_a_chat_is_a_server_span_with_one_client_span_per_attempt(env):
    gw, collector, recorder, _ = env
    trace_id, parent_id, header = traceparent()
    resp = client(gw).chat.completions.create(
        model="traced", messages=[{"role": "user", "content": PROMPT}], max_tokens=50, temperature=0.3,
        extra_headers={"traceparent": header},
    )
    spans = collector.trace(trace_id, 2, gw)
    assert len(spans) == 2
    server, attempt = one(spans, SERVER), one(spans, CLIENT)

    # The request span continues the client's trace.
    assert server.parent_span_id.hex() == parent_id
    assert server.name == "chat traced"
    a = attrs(server.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "traced"
    assert a["gen_ai.response.model"] == "upstream-model-2024-08-06"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == pytest.approx(0.3)
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens == 11
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens == 7
    assert a["http.response.status_code"] == 200
    assert a["switchyard.route"] == "default/traced"
    assert a["switchyard.key.team"] == "demo"
    assert a["switchyard.attempts"] == 1
    assert "error.type" not in a
    assert server.status.code != STATUS_ERROR

    # One attempt, a child of the request span.
    assert attempt.parent_span_id == server.span_id
    assert attempt.name == "chat upstream-model"
    b = attrs(attempt.attributes)
    assert b["gen_ai.provider.name"] == "openai"
    assert b["gen_ai.request.model"] == "upstream-model"
    assert b["server.address"] == "127.0.0.1"
    assert b["server.port"] == recorder.port
    assert b["http.response.status_code"] == 200
    assert b["switchyard.attempt"] == 1
    assert server.start_time_unix_nano <= attempt.start_time_unix_nano
    assert attempt.end_time_unix_nano <= server.end_time_unix_nano

    # The upstream got a traceparent naming the attempt span.
    sent = recorder.headers[-1]["traceparent"]
    assert sent == f"00-{trace_id}-{attempt.span_id.hex()}-01"

    # The request's access-log line names the trace, so logs and traces join.
    lines = [json.loads(line) for line in gw.output().splitlines() if line.startswith("{")]
    logged = [x["fields"] for x in lines if x.get("target") == "switchyard::access"
              and x.get("fields", {}).get("trace_id") == trace_id]
    assert len(logged) == 1, lines[-3:]
    assert logged[0]["status"] == 200 and logged[0]["route"] == "default/traced"

    # The resource: the default service name and OTEL_RESOURCE_ATTRIBUTES.
    resource = next(r for r, s in collector.spans() if s.trace_id.hex() == trace_id)
    assert resource["service.name"] == "switchyard"
    assert resource["deployment.environment.name"] == "test"


def test_a_stream_span_ends_with_the_stream_and_records_ttft(env):
    gw, collector, _, _ = env
    trace_id, _, header = traceparent()
    chunks = list(client(gw).chat.completions.create(
        model="streamed", messages=[{"role": "user", "content": PROMPT + " one two three"}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"traceparent": header},
    ))
    usage = next(c.usage for c in chunks if c.usage)
    spans = collector.trace(trace_id, 2, gw)
    server, attempt = one(spans, SERVER), one(spans, CLIENT)
    assert server.name == "chat streamed"
    a = attrs(server.attributes)
    assert a["switchyard.stream"] is True
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["switchyard.ttft_ms"] > 0
    assert a["gen_ai.response.model"] == chunks[0].model
    assert [e.name for e in server.events] == ["gen_ai.first_token"]
    # The request span lasts until the last chunk, after the first token.
    ttft_at = server.events[0].time_unix_nano
    assert server.start_time_unix_nano < ttft_at < server.end_time_unix_nano
    # The attempt span covers the upstream stream, under the request span.
    assert attempt.parent_span_id == server.span_id
    assert attrs(attempt.attributes)["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attempt.end_time_unix_nano > ttft_at


def test_retries_are_one_client_span_each(env):
    gw, collector, _, mock = env
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(mock.url + "/mock/reset", method="POST")).read()
    trace_id, _, header = traceparent()
    resp = client(gw).chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": header},
    )
    assert resp.headers["x-switchyard-attempts"] == "3"
    spans = collector.trace(trace_id, 4, gw)
    server = one(spans, SERVER)
    attempts = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: attrs(s.attributes)["switchyard.attempt"])
    assert [attrs(s.attributes)["switchyard.attempt"] for s in attempts] == [1, 2, 3]
    assert all(s.parent_span_id == server.span_id for s in attempts)
    for failed in attempts[:2]:
        b = attrs(failed.attributes)
        assert b["error.type"] == "server_error"
        assert b["http.response.status_code"] == 500
        assert failed.status.code == STATUS_ERROR
    assert "error.type" not in attrs(attempts[2].attributes)
    assert attrs(server.attributes)["switchyard.attempts"] == 3
    assert server.status.code != STATUS_ERROR


def test_a_fallback_is_a_client_span_on_the_next_route(env):
    gw, collector, _, _ = env
    trace_id, _, header = traceparent()
    resp = client(gw).chat.completions.with_raw_response.create(
        model="limited", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": header},
    )
    assert resp.headers["x-switchyard-fallback-depth"] == "1"
    spans = collector.trace(trace_id, 3, gw)
    server = one(spans, SERVER)
    attempts = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: attrs(s.attributes)["switchyard.attempt"])
    first, second = (attrs(s.attributes) for s in attempts)
    assert (first["switchyard.route"], first["error.type"], first["http.response.status_code"]) == (
        "default/limited", "rate_limit", 429)
    assert (second["switchyard.route"], second["http.response.status_code"]) == ("default/backup", 200)
    a = attrs(server.attributes)
    assert server.name == "chat limited"
    assert (a["switchyard.route"], a["switchyard.fallback_depth"]) == ("default/backup", 1)


def test_a_hedge_is_a_client_span_and_the_loser_ends_cancelled(env):
    gw, collector, _, _ = env
    trace_id, _, header = traceparent()
    resp = client(gw).chat.completions.with_raw_response.create(
        model="hedged", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": header},
    )
    assert (resp.headers["x-switchyard-backend"], resp.headers["x-switchyard-attempts"]) == ("standby", "2")
    spans = collector.trace(trace_id, 3, gw)
    server = one(spans, SERVER)
    by_backend = {attrs(s.attributes)["switchyard.backend"]: s for s in spans if s.kind == CLIENT}
    assert set(by_backend) == {"primary", "standby"}
    assert all(s.parent_span_id == server.span_id for s in by_backend.values())
    primary, standby = attrs(by_backend["primary"].attributes), attrs(by_backend["standby"].attributes)
    assert (primary["switchyard.attempt"], primary["error.type"]) == (1, "cancelled")
    assert "http.response.status_code" not in primary
    assert (standby["switchyard.attempt"], standby["http.response.status_code"]) == (2, 200)
    assert attrs(server.attributes)["switchyard.backend"] == "standby"


def test_failures_mark_the_request_span(env):
    gw, collector, _, _ = env
    trace_id, _, header = traceparent()
    with pytest.raises(openai.APIStatusError) as e:
        client(gw).chat.completions.create(
            model="broken", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": header})
    spans = collector.trace(trace_id, 2, gw)
    server, attempt = one(spans, SERVER), one(spans, CLIENT)
    a = attrs(server.attributes)
    assert a["http.response.status_code"] == e.value.status_code >= 500
    assert a["error.type"]
    assert server.status.code == STATUS_ERROR
    assert attempt.status.code == STATUS_ERROR

    # A client error (unknown model) is recorded but is not the server's error.
    trace_id, _, header = traceparent()
    with pytest.raises(openai.NotFoundError):
        client(gw).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": PROMPT}], extra_headers={"traceparent": header})
    (server,) = collector.trace(trace_id, 1, gw)
    a = attrs(server.attributes)
    assert (a["http.response.status_code"], a["error.type"]) == (404, "invalid_request_error")
    assert server.status.code != STATUS_ERROR
    # The client's model string names no route: it is an attribute (cut to 256 characters),
    # never the span's name, which trace backends index (issue 16, defect 8).
    assert server.name == "chat"
    assert a["gen_ai.request.model"] == "no-such-model"


def test_spans_carry_no_key_prompt_or_completion(env):
    gw, collector, _, _ = env
    # Its own traffic, each request in a trace of its own: a chat, a stream, a failed upstream
    # and a request with a wrong key. Only these spans are read.
    traces = {}

    def traced():
        trace_id, _, header = traceparent()
        return trace_id, {"traceparent": header}

    trace_id, h = traced()
    client(gw).chat.completions.create(model="traced", messages=[{"role": "user", "content": PROMPT}],
                                       extra_headers=h)
    traces[trace_id] = 2
    trace_id, h = traced()
    list(client(gw).chat.completions.create(
        model="streamed", messages=[{"role": "user", "content": PROMPT}], stream=True, extra_headers=h))
    traces[trace_id] = 2
    trace_id, h = traced()
    with pytest.raises(openai.APIStatusError):
        client(gw).chat.completions.create(model="broken", messages=[{"role": "user", "content": PROMPT}],
                                           extra_headers=h)
    traces[trace_id] = 2
    trace_id, h = traced()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong-key-do-not-trace", max_retries=0).chat.completions.create(
            model="traced", messages=[{"role": "user", "content": PROMPT}], extra_headers=h)
    traces[trace_id] = 1
    received = []
    for trace_id, count in traces.items():
        spans = collector.trace(trace_id, count, gw)
        assert len(spans) == count, [(s.name, s.kind) for s in spans]
        received += [(r, s) for r, s in collector.spans() if s.trace_id.hex() == trace_id]
    assert len(received) == sum(traces.values())
    text = repr([(r, s.name, attrs(s.attributes), [attrs(e.attributes) for e in s.events]) for r, s in received])
    # The spans were read (the request's model is in them), and none carries a secret.
    assert "traced" in text and "streamed" in text and "broken" in text
    for secret in (KEY, UPSTREAM_KEY, "sk-wrong-key-do-not-trace", PROMPT, COMPLETION, "Hello! You said"):
        assert secret not in text
    # Every export went to the OTLP/HTTP traces path, as protobuf.
    assert {(path, ctype) for path, ctype, _ in collector.requests} == {("/v1/traces", "application/x-protobuf")}


def test_spans_are_flushed_on_sigterm(tmp_path):
    collector, recorder = Collector(), Recorder()
    gw = Gateway(config(tmp_path, 1, recorder.port), env={
        **OTEL_OFF,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url + "/v1/traces",
        # Nothing is exported on a timer during the test: only the shutdown flush can send it.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "OTEL_SERVICE_NAME": "switchyard-test",
    })
    try:
        trace_id, _, header = traceparent()
        client(gw).chat.completions.create(
            model="traced", messages=[{"role": "user", "content": "hi"}], extra_headers={"traceparent": header})
        # The request is over (its access-log line is out); with a ten-minute export delay
        # nothing has been sent: what arrives next is the shutdown flush.
        wait_until(lambda: trace_id in gw.output(), "the request's access-log line")
        assert collector.spans() == []
        gw.terminate()
        gw.proc.wait(timeout=20)
        spans = collector.trace(trace_id, 2)
        assert {s.kind for s in spans} == {SERVER, CLIENT}
        assert {r["service.name"] for r, _ in collector.spans()} == {"switchyard-test"}
    finally:
        gw.stop()
        collector.stop()
        recorder.stop()


def test_without_an_endpoint_nothing_is_sent_or_propagated(tmp_path):
    """With the OTEL endpoints empty no exporter is set up (its start-up line is missing) and no
    traceparent goes upstream. (Nothing can name a collector here, so there is none to watch.)"""
    recorder = Recorder()
    gw = Gateway(config(tmp_path, 1, recorder.port), env={**OTEL_OFF, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        _, _, header = traceparent()
        resp = client(gw).chat.completions.create(
            model="traced", messages=[{"role": "user", "content": "hi"}], extra_headers={"traceparent": header})
        assert resp.choices[0].message.content == COMPLETION
        assert "traceparent" not in recorder.headers[-1]
        assert "sending traces" not in gw.output()
    finally:
        gw.stop()
        recorder.stop()
