"""`switchyard import-litellm`: LiteLLM proxy configs turned into Switchyard manifests.

(a) Every example config shipped inside the `litellm` package (litellm/proxy/example_config_yaml)
and the configs in litellm_configs/ (written from LiteLLM's documented routing, fallback and
caching examples) import into manifests that `switchyard validate` accepts, and the settings
reported as not carried are the expected ones.

(b) Behaviour parity: the routing and fallback configs served by a real LiteLLM proxy and by
Switchyard on the imported manifests, both in front of the mock provider with the same fault
models, send the same upstream requests (models, retries, fallbacks), read from the mock's
request ledger.

LiteLLM lives in a virtualenv of its own (litellm_configs/requirements.txt says why), created
here on first use.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from harness import Gateway, MockProvider, Process, binary, free_port, wait_http

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "litellm_configs"
REQUIREMENTS = CONFIGS / "requirements.txt"
EXPECTED = CONFIGS / "expected_not_carried.json"
CACHE = Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
MASTER_KEY = "sk-parity-master"
MOCK_KEY = "sk-mock-provider-key"


def litellm_version() -> str:
    m = re.search(r"^litellm\[proxy\]==(\S+)$", REQUIREMENTS.read_text(), re.M)
    assert m, "litellm_configs/requirements.txt pins litellm[proxy]"
    return m.group(1)


@pytest.fixture(scope="module")
def litellm_venv() -> Path:
    """The virtualenv with the pinned LiteLLM proxy; created (pip, from PyPI) when missing. A
    failed install fails the tests that need it: they are part of the suite."""
    venv = CACHE / f"litellm-venv-{litellm_version()}"
    if not (venv / "bin" / "litellm").exists():
        py = shutil.which("python3.11") or sys.executable
        r = subprocess.run([py, "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)],
                               capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            pytest.fail(f"installing {REQUIREMENTS} into {venv} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}",
                        pytrace=False)
    return venv


def example_configs(venv: Path) -> list[Path]:
    found = sorted(venv.glob("lib/python3*/site-packages/litellm/proxy/example_config_yaml/*.yaml"))
    assert found, f"no example configs in the litellm package under {venv}"
    return found


def run_import(config: Path, out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    # Settings LiteLLM reads from the environment at start-up; the importer reads the
    # non-secret ones (base URLs) while importing. Leave none of the machine's in.
    for k in list(full_env):
        if k.startswith(("AZURE_", "AWS_", "VERTEX", "MOCK_", "FAKE_", "HOSTED_VLLM")):
            del full_env[k]
    full_env.update(env or {})
    return subprocess.run([binary(), "import-litellm", str(config), "--namespace", "default", "--out", str(out), *extra],
                          capture_output=True, text=True, env=full_env)


def not_carried(stderr: str, config: Path) -> list[str]:
    """`LINE: path` of every setting reported as not carried."""
    out = []
    for line in stderr.splitlines():
        m = re.match(re.escape(str(config)) + r":(\d+): (\S+): not carried: ", line)
        if m:
            out.append(f"{m.group(1)}: {m.group(2)}")
    return out


def referenced_env(out: Path) -> dict:
    """Every `${VAR}` the written Secrets read, set to a test value."""
    text = "".join(p.read_text() for p in out.glob("*.yaml"))
    return {var: "test-value" for var in re.findall(r"\$\{([A-Za-z0-9_]+)\}", text)}


def validate(out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([binary(), "validate", str(out)], capture_output=True, text=True,
                          env={**os.environ, **env})


def import_and_validate(config: Path, out: Path, env=None) -> list[str]:
    r = run_import(config, out, env=env)
    assert r.returncode == 0, r.stderr
    # Every line of stderr is a note with its file and line, or the summary.
    for line in r.stderr.splitlines():
        assert re.match(re.escape(str(config)) + r":\d+: \S+: (not carried|note): ", line) or \
            re.match(r"\d+ provider\(s\), \d+ route\(s\)", line), line
    missing = not_carried(r.stderr, config)
    if not list(out.glob("*.yaml")):
        # Nothing could be carried (no servable model): said so, and nothing to validate.
        assert missing, r.stderr
        return missing
    v = validate(out, referenced_env(out))
    assert v.returncode == 0, f"{config.name}:\n{v.stdout}{v.stderr}\n{r.stderr}"
    assert " 0 error(s)" in v.stdout, v.stdout
    routes = len(re.findall(r"^kind: LLMRoute$", (out / "routes.yaml").read_text(), re.M)) \
        if (out / "routes.yaml").exists() else 0
    assert f"{routes} route(s)" in v.stdout, v.stdout
    # --check fails exactly when something was not carried.
    check = run_import(config, out, "--check", env=env)
    assert (check.returncode != 0) == bool(missing), check.stderr
    return missing


# ------------------------------------------------------------------------- (a) configs validate


def test_litellm_package_example_configs(litellm_venv, tmp_path):
    expected = json.loads(EXPECTED.read_text())
    # The expected lists were reviewed against this version's example configs.
    assert expected["litellm"] == litellm_version()
    seen = {}
    for config in example_configs(litellm_venv):
        seen[config.name] = import_and_validate(config, tmp_path / config.stem)
    assert seen == expected["package"], json.dumps(seen, indent=1)


def test_documented_routing_example(tmp_path):
    config = CONFIGS / "routing.yaml"
    out = tmp_path / "routing"
    assert import_and_validate(config, out) == []
    routes = (out / "routes.yaml").read_text()
    # weights 9:1, rpm limits, the alias, order -> priority tiers, model_info -> window and prices.
    assert "aliases:\n  - gpt-4\n" in routes
    assert "strategy: shuffle" in routes
    assert re.search(r"model: gpt-4o-eastus\n    weight: 9\n    priority: 0\n    limits:\n      rpm: 900", routes), routes
    assert re.search(r"model: claude-3-5-sonnet-20240620\n    weight: 1\n    priority: 0\n    contextWindow: 200000\n"
                     r"    maxOutputTokens: 8192\n    pricing:\n      input: 3.0\n      output: 15.0", routes), routes
    # order 2 is a route of its own that order 1 falls back to, as LiteLLM moves to it only
    # after order 1's retries.
    assert "fallbacks:\n  - route: claude-sonnet-order-2\n" in routes
    assert "model: claude-sonnet-order-2\n  mode: chat\n  backends:\n  - name: bedrock\n" in routes, routes
    assert "mode: embeddings" in routes
    providers = (out / "providers.yaml").read_text()
    assert "baseUrl: https://my-endpoint-eastus.openai.azure.com\n" in providers
    secrets = (out / "secrets.yaml").read_text()
    assert "AZURE_API_KEY_EASTUS: ${AZURE_API_KEY_EASTUS}" in secrets
    assert "accessKeyId: ${AWS_ACCESS_KEY_ID}" in secrets


def test_documented_fallbacks_example(tmp_path):
    config = CONFIGS / "fallbacks.yaml"
    out = tmp_path / "fallbacks"
    missing = import_and_validate(config, out)
    # The inline master key is never copied.
    assert missing == ["39: general_settings.master_key"], missing
    assert "sk-1234" not in "".join(p.read_text() for p in out.glob("*.yaml"))
    routes = (out / "routes.yaml").read_text()
    gpt35 = routes.split("model: gpt-3.5-turbo\n", 1)[1].split("---")[0]
    # Generic -> rate limits, 5xx, timeouts (context-window and content-policy errors have their
    # own lists); context window -> the 16k model; content policy -> claude-opus.
    assert "fallbacks:\n  - route: gpt-4\n    on:\n    - rate-limit\n    - server-error\n    - timeout\n" in gpt35, gpt35
    assert "  - route: gpt-3.5-turbo-16k\n    on:\n    - context-window\n" in gpt35, gpt35
    assert "  - route: claude-opus\n    on:\n    - content-policy\n" in gpt35, gpt35
    assert "retries:\n    attempts: 3\n    backoff: 1s\n" in routes
    providers = (out / "providers.yaml").read_text()
    assert "circuitBreaker:\n    consecutiveFailures: 4\n    cooldown: 30s" in providers


def test_documented_caching_example(tmp_path):
    config = CONFIGS / "caching.yaml"
    out = tmp_path / "caching"
    missing = import_and_validate(config, out)
    assert sorted(missing) == [
        "12: litellm_settings.set_verbose",
        "17: litellm_settings.cache_params.host",
        "18: litellm_settings.cache_params.port",
        "19: litellm_settings.cache_params.password",
    ], missing
    routes = (out / "routes.yaml").read_text()
    assert routes.count("cache:\n    enabled: true\n    ttl: 600s\n") == 2, routes
    assert routes.count("dropUnsupportedParams: true") == 2


def test_check_and_line_numbers(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        "      api_key: os.environ/OPENAI_API_KEY\n"
        "      tags: [a]\n"
        "router_settings:\n"
        "  redis_host: localhost\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
    )
    r = run_import(config, tmp_path / "out", "--check")
    assert r.returncode == 1, r.stderr
    assert f"{config}:6: model_list[0].litellm_params.tags: not carried: " in r.stderr
    assert f"{config}:8: router_settings.redis_host: not carried: " in r.stderr
    config.write_text(config.read_text().replace("      tags: [a]\n", "").replace("  redis_host: localhost\n", "  num_retries: 1\n"))
    r = run_import(config, tmp_path / "out", "--check")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------- (b) behaviour parity


class LiteLLMProxy(Process):
    def __init__(self, venv: Path, config: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
             "--num_workers", "1"],
            env={**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                 "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"},
        )
        try:
            wait_http(self.url + "/health/liveliness", timeout=180, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("the LiteLLM proxy did not start:\n" + self.output()[-5000:])

    def stop(self) -> None:
        super().stop()


def ledger(mock) -> list:
    with urllib.request.urlopen(mock.url + "/mock/ledger") as r:
        return [(e["model"], e["status"]) for e in json.loads(r.read())]


def reset(mock) -> None:
    urllib.request.urlopen(urllib.request.Request(mock.url + "/mock/reset", method="POST")).read()


def upstream_calls(mock, base: str, model: str, messages=None) -> tuple:
    """Sends one chat request; returns (status, the upstream calls the mock saw)."""
    reset(mock)
    r = requests.post(base + "/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": model, "messages": messages or [{"role": "user", "content": "hello there"}]})
    # The mock's ledger entry is settled when the body is written; give it a moment.
    time.sleep(0.2)
    return r.status_code, ledger(mock)


PARITY = {
    "parity_routing.yaml": [
        # (model, expected upstream calls, expected status); a pair is (LiteLLM's, Switchyard's)
        ("weighted", [("weighted-a", 200)], 200),
        ("flaky", [("parity-mock-flaky-2", 500), ("parity-mock-flaky-2", 500), ("parity-mock-flaky-2", 200)], 200),
        # The same three calls; the client is told differently: LiteLLM passes the upstream's
        # 500 on, Switchyard answers 502 (its upstream failed), as docs/migrating-from-litellm.md says.
        ("broken", [("broken-mock-500", 500)] * 3, (500, 502)),
        # LiteLLM spends its retries on order 1 before moving to order 2 (the importer writes
        # order 2 as a fallback route for that reason).
        ("tiered", [("tier1-mock-500", 500)] * 3 + [("tier2-model", 200)], 200),
        # A wildcard route fills the upstream model with the rest of the client's.
        ("wild/any-model", [("any-model", 200)], 200),
    ],
    "parity_fallbacks.yaml": [
        ("primary-500", [("primary-mock-500", 500)] * 2 + [("backup-model", 200)], 200),
        ("primary-429", [("primary-mock-429", 429)] * 2 + [("backup-model", 200)], 200),
        ("primary-context", [("primary-mock-context-length", 400), ("big-context-model", 200)], 200),
        ("primary-policy", [("primary-mock-content-policy", 400), ("safe-model", 200)], 200),
    ],
}


@pytest.mark.parametrize("name", sorted(PARITY))
def test_behaviour_parity_with_litellm(name, litellm_venv, tmp_path):
    config = CONFIGS / name
    mock = MockProvider()
    env = {"MOCK_API_BASE": mock.url + "/v1", "MOCK_API_KEY": MOCK_KEY, "LITELLM_MASTER_KEY": MASTER_KEY}
    out = tmp_path / "manifests"
    try:
        r = run_import(config, out, "--check", env=env)
        # Carried whole (the base URL read while importing is a note, not a loss).
        assert r.returncode == 0, r.stderr
        gw = Gateway(out, env=env)
        try:
            sy = {model: upstream_calls(mock, gw.url, model) for model, _, _ in PARITY[name]}
        finally:
            gw.stop()
        ll_proxy = LiteLLMProxy(litellm_venv, config, env)
        try:
            ll = {model: upstream_calls(mock, ll_proxy.url, model) for model, _, _ in PARITY[name]}
        finally:
            ll_proxy.stop()
        report = json.dumps({"switchyard": sy, "litellm": ll}, indent=1)
        for model, calls, status in PARITY[name]:
            ll_status, sy_status = status if isinstance(status, tuple) else (status, status)
            ll_calls, sy_calls = calls if isinstance(calls, tuple) else (calls, calls)
            assert ll[model] == (ll_status, ll_calls), f"LiteLLM, {model}: {report}"
            assert sy[model] == (sy_status, sy_calls), f"Switchyard, {model}: {report}"
    finally:
        mock.stop()
