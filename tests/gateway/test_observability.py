"""The chart's alert rules and dashboard are valid and name only metrics the gateway exports."""

import json
import re
import subprocess
import urllib.request

import openai
import pytest

from harness import Gateway, MockProvider, REPO, copy_example, require

CHART = REPO / "charts" / "switchyard"


def promtool():
    return require("promtool", "prometheus")


def test_alert_rules_pass_promtool():
    r = subprocess.run([promtool(), "check", "rules", str(CHART / "rules" / "switchyard.rules.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_alert_rules_fire_when_intended():
    """promtool's rule unit tests: each alert fires on the series that should raise it, with its
    labels and text, and stays quiet below its threshold."""
    r = subprocess.run([promtool(), "test", "rules", str(REPO / "tests" / "chart" / "rules_test.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def exported_metric_names(text):
    """The metric names in a scrape (with a histogram's _bucket, _sum and _count series)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """/metrics after known traffic: chat, a stream, embeddings and a cut stream with the demo
    key; and, with a key limited to one request a minute on a $1 daily budget (team `capped`),
    a chat that fails over from a backend whose circuit opens on its first failure, then a
    refused one. A labelled metric appears in a scrape only once it has a sample: this traffic
    gives one to every metric the chart's dashboard and alert rules use."""
    mock = MockProvider()
    config = copy_example("quickstart", tmp_path_factory.mktemp("obs"))
    (config / "cut.yaml").write_text(f"""apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: upstream, namespace: default}}
spec:
  type: openai-compatible
  baseUrl: http://127.0.0.1:{mock.port}/v1
  credentials: {{secretRef: {{name: upstream-key}}}}
  circuitBreaker: {{consecutiveFailures: 1, cooldown: 10m}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: default}}
stringData: {{apiKey: sk-upstream}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: cut, namespace: default}}
spec:
  model: cut
  retries: {{attempts: 0}}
  backends: [{{providerRef: {{name: upstream}}, model: mock-cut}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: failover, namespace: default}}
spec:
  model: failover
  retries: {{attempts: 1, backoff: 10ms}}
  backends:
    - {{name: primary, providerRef: {{name: upstream}}, model: mock-500, priority: 0}}
    - {{name: standby, providerRef: {{name: mock}}, model: mock-model, priority: 1}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: capped, namespace: default}}
spec:
  secretRef: {{name: capped-key}}
  limits: {{rpm: 1}}
  budget: {{maxSpend: 1, period: daily}}
  labels: {{team: capped}}
---
apiVersion: v1
kind: Secret
metadata: {{name: capped-key, namespace: default}}
stringData: {{key: sk-capped}}
""")
    gw = Gateway(config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-demo", max_retries=0)
    client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "a"}])
    list(client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "b"}], stream=True))
    client.embeddings.create(model="demo-embed", input="c")
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="cut", messages=[{"role": "user", "content": "a b c d e"}], stream=True))
    capped = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-capped", max_retries=0)
    r = capped.chat.completions.with_raw_response.create(model="failover", messages=[{"role": "user", "content": "d"}])
    assert (r.headers["x-switchyard-backend"], r.headers["x-switchyard-attempts"]) == ("standby", "2")
    with pytest.raises(openai.RateLimitError):
        capped.chat.completions.create(model="failover", messages=[{"role": "user", "content": "e"}])
    with urllib.request.urlopen(gw.metrics_url + "/metrics") as r:
        text = r.read().decode()
    gw.stop()
    mock.stop()
    return text


def names_in(expr):
    return set(re.findall(r"\b(switchyard_[a-z_]+)\b", expr))


def test_dashboard_parses_and_names_only_exported_metrics(scraped):
    dash = json.loads((CHART / "dashboards" / "switchyard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set().union(*(names_in(e) for e in exprs))
    assert used, "the dashboard queries nothing"
    # Requests, errors, p95 latency, TTFT, spend by team, budgets, backend health and cooldowns.
    wanted = {"switchyard_requests_total", "switchyard_request_duration_seconds_bucket",
              "switchyard_time_to_first_token_seconds_bucket", "switchyard_spend_usd_total",
              "switchyard_budget_used_ratio", "switchyard_backend_state", "switchyard_requests_in_flight"}
    assert wanted <= used, f"the dashboard lacks {wanted - used}"
    missing = used - exported_metric_names(scraped)
    assert not missing, f"dashboard uses metrics the gateway does not export: {missing}"


def test_the_scrape_has_the_metrics_the_chart_uses(scraped):
    """The checks above compare against this scrape: it must hold samples, not only names."""
    names = exported_metric_names(scraped)
    for name in ("switchyard_backend_state", "switchyard_backend_state_changes_total", "switchyard_limited_total",
                 "switchyard_budget_used_ratio", "switchyard_budget_remaining_usd", "switchyard_overhead_seconds"):
        assert name in names, f"{name} is not in the scrape"
    samples = [line for line in scraped.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith('switchyard_limited_total{') for line in samples)
    assert any(line.startswith("switchyard_backend_state{") and 'state="open"' in line and line.endswith(" 1")
               for line in samples), [l for l in samples if l.startswith("switchyard_backend_state")]


def test_rules_name_only_exported_metrics(scraped):
    text = (CHART / "rules" / "switchyard.rules.yaml").read_text()
    missing = names_in(text) - exported_metric_names(scraped)
    assert not missing, f"alert rules use metrics the gateway does not export: {missing}"


def test_metrics_after_known_traffic(scraped):
    def value(prefix):
        return sum(float(l.rsplit(" ", 1)[1]) for l in scraped.splitlines() if l.startswith(prefix))

    assert value('switchyard_requests_total{backend="mock",operation="chat",provider="mock",route="default/demo-chat",status="2xx"}') == 2
    assert value('switchyard_requests_total{backend="mock",operation="embeddings",provider="mock",route="default/demo-embed",status="2xx"}') == 1
    assert value('switchyard_request_duration_seconds_count{route="default/demo-chat"}') == 2
    assert value('switchyard_time_to_first_token_seconds_count{route="default/demo-chat"}') == 1
    assert value('switchyard_tokens_total{route="default/demo-chat",type="input"}') == 2
    assert value('switchyard_tokens_total{route="default/demo-chat",type="output"}') == 8
    assert value('switchyard_stream_errors_total{backend="upstream",route="default/cut"}') == 1
    assert value('switchyard_spend_usd_total{route="default/demo-chat",team="demo"}') > 0
    assert "sk-switchyard-demo" not in scraped and "sk-upstream" not in scraped
    assert "\nswitchyard_connections_open " in scraped
    assert value("switchyard_connections_refused_total ") == 0
