"""One structured JSON log line per request; no key and no prompt unless a route opts in."""

import json
import time

import openai
import pytest

from harness import copy_example

SECRET_PROMPT = "my card number is 4111 1111 1111 1111"


def lines(gw):
    out = []
    for line in gw.output().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def access_lines(gw):
    return [l for l in lines(gw) if l.get("target") == "switchyard::access"]


@pytest.fixture
def logged(tmp_path, gateway_on):
    def start(log_prompts=False):
        config = copy_example("quickstart", tmp_path / ("on" if log_prompts else "off"))
        if log_prompts:
            routes = config / "routes.yaml"
            routes.write_text(routes.read_text().replace("  model: demo-chat\n", "  model: demo-chat\n  logPrompts: true\n", 1))
        return gateway_on(config, env={"SWITCHYARD_LOG_FORMAT": "json", "SWITCHYARD_LOG": "info"})
    return start


def test_one_line_per_request_without_keys_or_prompts(logged):
    gw = logged()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-demo", max_retries=0)
    start = time.monotonic()
    r = client.chat.completions.with_raw_response.create(
        model="demo-chat", messages=[{"role": "user", "content": SECRET_PROMPT}])
    wall_ms = (time.monotonic() - start) * 1000
    request_id = r.headers["x-request-id"]
    list(client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": SECRET_PROMPT}], stream=True))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": SECRET_PROMPT}])
    gw.terminate()
    gw.proc.wait(timeout=10)
    access = access_lines(gw)
    assert len(access) == 3, access
    first = access[0]["fields"]
    assert first["request_id"] == request_id
    assert first["route"] == "default/demo-chat" and first["backend"] == "mock" and first["status"] == 200
    assert first["key"] == "default/demo" and first["team"] == "demo"
    assert first["prompt_tokens"] == 8 and first["completion_tokens"] == 11 and first["cost_usd"] > 0
    # The request's own time, as the gateway measured it: within what this client waited.
    assert first["attempts"] == 1 and 0 <= first["latency_ms"] <= wall_ms, (first["latency_ms"], wall_ms)
    assert access[1]["fields"]["completion_tokens"] == 11  # the stream, logged when it ended
    # ...after its whole length: 20 ms to the first token, then 11 tokens at 200 a second.
    assert access[1]["fields"]["latency_ms"] >= 20 + 10 * 5, access[1]["fields"]
    assert access[2]["fields"]["status"] == 404
    # Refused after authentication: the line still names the key (never its value).
    assert access[2]["fields"]["key"] == "default/demo", access[2]["fields"]
    text = gw.output()
    assert "4111" not in text, "a prompt reached the logs"
    assert "sk-switchyard-demo" not in text, "a key reached the logs"


def test_prompt_logging_only_when_the_route_opts_in(logged):
    gw = logged(log_prompts=True)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-demo", max_retries=0)
    client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": SECRET_PROMPT}])
    gw.terminate()
    gw.proc.wait(timeout=10)
    prompts = [l for l in lines(gw) if l.get("target") == "switchyard::prompts"]
    assert len(prompts) == 1 and "4111" in prompts[0]["fields"]["prompt"]
    assert "sk-switchyard-demo" not in gw.output()
