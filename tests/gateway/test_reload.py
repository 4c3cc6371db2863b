"""Standalone mode reloads on file changes without dropping what is in flight, refuses an
invalid edit, and drains on SIGTERM."""

import threading
import time
import urllib.request

import openai
import pytest

from harness import copy_example

KEY = "sk-switchyard-demo"

SLOW_MOCK = """apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: default}
spec:
  type: mock
  mock:
    response: "{text}"
    tokensPerSecond: 10
"""


# Thirty words at ten a second: a three-second stream, long enough for a reload (or the start of
# a drain) to be seen while it is still open.
LONG = " ".join(f"w{i}" for i in range(30))


def slow_config(tmp_path, text=LONG):
    config = copy_example("quickstart", tmp_path)
    (config / "providers.yaml").write_text(SLOW_MOCK.replace("{text}", text))
    return config


def collect(stream):
    text = ""
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
    return text


def metric(url, name):
    with urllib.request.urlopen(url + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def chat(client):
    return client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "x"}])


def test_reload_keeps_streams_in_flight_and_refuses_invalid_edits(tmp_path, gateway_on):
    config = slow_config(tmp_path)
    gw = gateway_on(config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    assert metric(gw.metrics_url, "switchyard_config_generation") == 1

    # A three-second stream is open (its first chunk has arrived) while the route is edited.
    result = {}
    stream = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    t = threading.Thread(target=lambda: result.update(text=collect(stream)))
    t.start()
    routes = config / "routes.yaml"
    routes.write_text(routes.read_text().replace("model: mock-model", "model: mock-model-v2"))
    # New requests use the new config, while the stream is still going.
    deadline = time.monotonic() + 10
    while chat(client).model != "mock-model-v2":
        assert time.monotonic() < deadline, "the edit was not picked up"
        time.sleep(0.05)
    assert t.is_alive(), "the stream ended before the reload: nothing was shown"
    assert metric(gw.metrics_url, "switchyard_config_generation") == 2
    t.join(timeout=10)
    assert result["text"] == LONG

    # An invalid edit (unknown field) is refused; the last good config keeps serving.
    routes.write_text(routes.read_text().replace("model: mock-model-v2", "model: mock-model-v3\n      wieght: 2"))
    deadline = time.monotonic() + 5
    while metric(gw.metrics_url, "switchyard_config_reload_failures_total") < 1:
        assert time.monotonic() < deadline, "the invalid edit was not noticed"
        time.sleep(0.05)
    assert chat(client).model == "mock-model-v2"
    assert metric(gw.metrics_url, "switchyard_config_generation") == 2
    assert "unknown field" in gw.output()


def test_sigterm_drains_in_flight_streams(tmp_path, gateway_on):
    config = slow_config(tmp_path)
    gw = gateway_on(config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    result = {}
    stream = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    t = threading.Thread(target=lambda: result.update(text=collect(stream)))
    t.start()
    gw.terminate()
    # Readiness turns false at once while the stream is still going.
    deadline = time.monotonic() + 10
    not_ready = False
    while time.monotonic() < deadline and not not_ready:
        try:
            urllib.request.urlopen(gw.url + "/readyz", timeout=1)
        except urllib.error.HTTPError as e:
            not_ready = e.code == 503
        except urllib.error.URLError:
            break
        time.sleep(0.02)
    assert not_ready, "readiness did not turn false during the drain"
    assert t.is_alive(), "the stream ended before readiness was seen false: nothing was shown"
    t.join(timeout=10)
    assert result["text"] == LONG
    assert gw.proc.wait(timeout=10) == 0


def test_reload_under_load_swaps_mid_flight_and_drops_nothing(tmp_path, gateway_on):
    # Several slow streams open and ordinary requests arriving steadily while a route's backend
    # is changed: the new config generation is observed while every stream is still open, no
    # stream or request fails, the streams finish on the backend they started with (with their
    # usage), and requests that start after the swap go to the new backend.
    config = slow_config(tmp_path)
    gw = gateway_on(config)
    assert metric(gw.metrics_url, "switchyard_config_generation") == 1
    assert "generation=1 " in urllib.request.urlopen(gw.url + "/readyz").read().decode()

    streams = {}
    first_chunk = threading.Barrier(5)

    def stream(i):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        out = streams[i] = {"text": "", "models": set(), "usage": None, "error": None}
        try:
            chunks = client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "x"}], stream=True,
                stream_options={"include_usage": True})
            first = True
            for chunk in chunks:
                out["models"].add(chunk.model)
                for c in chunk.choices:
                    out["text"] += c.delta.content or ""
                if chunk.usage:
                    out["usage"] = chunk.usage
                if first:
                    first = False
                    first_chunk.wait(timeout=10)
        except Exception as e:  # recorded, asserted below
            out["error"] = repr(e)
        out["ended"] = time.monotonic()

    ordinary = []
    stop = threading.Event()

    def requests():
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        while not stop.is_set():
            start = time.monotonic()
            try:
                r = client.chat.completions.with_raw_response.create(
                    model="demo-chat", messages=[{"role": "user", "content": "y"}])
                ordinary.append((start, r.http_response.status_code, r.parse().model))
            except Exception as e:  # recorded, asserted below
                ordinary.append((start, None, repr(e)))
            time.sleep(0.02)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=requests) for _ in range(3)]
    for t in threads:
        t.start()
    first_chunk.wait(timeout=10)  # every stream has its first chunk
    # and some ordinary request was answered before the edit (the clients may start late under load)
    deadline = time.monotonic() + 10
    while not ordinary:
        assert time.monotonic() < deadline, "no ordinary request answered"
        time.sleep(0.01)
    edited = time.monotonic()
    routes = config / "routes.yaml"
    routes.write_text(routes.read_text().replace("model: mock-model", "model: mock-model-v2"))
    deadline = time.monotonic() + 10
    while metric(gw.metrics_url, "switchyard_config_generation") != 2:
        assert time.monotonic() < deadline, "the edit was not picked up"
        time.sleep(0.02)
    swapped = time.monotonic()
    open_at_swap = [i for i in range(4) if "ended" not in streams[i]]
    time.sleep(0.5)  # ordinary requests after the swap
    for t in threads[:4]:
        t.join(timeout=15)
    stop.set()
    for t in threads[4:]:
        t.join(timeout=15)

    # The swap happened mid-flight: all four streams were still open when generation 2 was seen.
    assert open_at_swap == [0, 1, 2, 3], (open_at_swap, swapped - edited)
    assert all(streams[i]["ended"] > swapped for i in range(4))
    assert "generation=2 " in urllib.request.urlopen(gw.url + "/readyz").read().decode()
    # Nothing dropped: every stream whole, with its usage, on the backend it started with.
    for i in range(4):
        s = streams[i]
        assert s["error"] is None, s
        assert s["text"] == LONG, s
        assert s["usage"] is not None and s["usage"].completion_tokens == 30, s
        assert s["models"] == {"mock-model"}, s
    # Every ordinary request answered 200; those begun after the swap on the new backend.
    assert ordinary and all(status == 200 for _, status, _ in ordinary), [o for o in ordinary if o[1] != 200]
    before = [m for start, _, m in ordinary if start < edited]
    after = [m for start, _, m in ordinary if start > swapped]
    assert before and set(before) == {"mock-model"}, before
    assert after and set(after) == {"mock-model-v2"}, after


def wait_until(check, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def status_of(client):
    try:
        chat(client)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


def test_in_place_edits_of_keys_and_their_secrets_take_effect(tmp_path, gateway_on):
    # A reload parses and compiles only the documents that changed, so each edit here changes
    # one document in place (same lines), in files that also carry a resourceVersion, as
    # `kubectl get -o yaml` writes: the edit must count, not the version left in the file.
    config = copy_example("quickstart", tmp_path)
    keys = config / "keys.yaml"
    text = keys.read_text()
    for name in ("demo", "demo-key"):
        text = text.replace(f"metadata:\n  name: {name}\n", f'metadata:\n  name: {name}\n  resourceVersion: "7"\n')
    assert text.count("resourceVersion") == 2
    keys.write_text(text)
    gw = gateway_on(config)
    old = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    new = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-rotated", max_retries=0)
    assert status_of(old) == 200
    assert status_of(new) == 401

    # The Secret's value changes: the old key stops working, the new one works.
    keys.write_text(text.replace("key: sk-switchyard-demo", "key: sk-switchyard-rotated"))
    wait_until(lambda: status_of(new) == 200, "the rotated key was not picked up")
    assert status_of(old) == 401

    # The key's own document gains a limit of one request a minute: the second request is refused.
    keys.write_text(
        keys.read_text().replace("  labels:\n    team: demo\n", "  limits: {rpm: 1}\n  labels:\n    team: demo\n", 1)
    )
    wait_until(lambda: metric(gw.metrics_url, "switchyard_config_generation") == 3, "the limit was not picked up")
    codes = [status_of(new) for _ in range(3)]
    assert codes.count(200) <= 1 and 429 in codes, codes

    # Back to the first text: the first key again, with no limit.
    keys.write_text(text)
    wait_until(lambda: status_of(old) == 200, "the first key did not come back")
    assert status_of(new) == 401
    assert [status_of(old) for _ in range(3)] == [200, 200, 200]
