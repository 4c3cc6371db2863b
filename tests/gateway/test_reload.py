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
