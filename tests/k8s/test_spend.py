"""VirtualKey spend and last use on a real API server: a fleet with a real `redis-server`, a
gateway process started as a pod would be, the operator (with the chart's RBAC) folding the
spend the gateways wrote into VirtualKey status, and the finalizer deleting a key's Redis
counters before the key goes."""

import datetime
import json

import openai
import pytest

from harness import RedisServer, Process, binary, free_port, wait_http

from operator_setup import start_operator

# $1000 per million tokens: "hi there" (2 prompt + 5 completion tokens with the mock) costs $0.007.
COST = 0.007
FINALIZER = "switchyard.dev/shared-state-cleanup"


@pytest.fixture(scope="module")
def fast_operator(control_plane, tmp_path_factory):
    """The operator with the chart's RBAC, reading spend every half second."""
    proc, _ = start_operator(control_plane, tmp_path_factory.mktemp("op"), args=("--spend-interval", "0.5"))
    yield proc
    proc.stop()
    print(proc.output()[-20000:])


def manifests(ns, redis_url):
    return f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: spend, namespace: {ns}}}
spec:
  replicas: 1
  redis: {{url: "{redis_url}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: {ns}}}
spec:
  type: mock
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {ns}}}
spec:
  model: chat
  backends:
    - providerRef: {{name: mock}}
      model: mock-model
      maxOutputTokens: 64
      pricing: {{input: 1000, output: 1000}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: spender, namespace: {ns}}}
spec:
  secretRef: {{name: spender-key}}
  budget: {{maxSpend: 10, period: daily}}
---
apiVersion: v1
kind: Secret
metadata: {{name: spender-key, namespace: {ns}}}
stringData: {{key: sk-spender}}
---
apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: idle, namespace: {ns}}}
spec:
  secretRef: {{name: idle-key}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idle-key, namespace: {ns}}}
stringData: {{key: sk-idle}}
"""


def get(cp, kind, name, ns):
    r = cp.kubectl("get", kind, name, "-n", ns, "-o", "json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_spend_and_last_use_reach_virtualkey_status_and_deletion_cleans_redis(
        control_plane, fast_operator, namespace, tmp_path):
    cp = control_plane
    redis = RedisServer(tmp_path)
    gw = None
    try:
        cp.kubectl("apply", "-f", "-", input=manifests(namespace, redis.url), check=True)
        # Keys served by a fleet with Redis carry the cleanup finalizer.
        cp.wait_for("finalizer on the key",
                    lambda: FINALIZER in (get(cp, "virtualkey", "spender", namespace) or {})
                    .get("metadata", {}).get("finalizers", []), 60)
        cp.wait_for("fleet serviceaccount",
                    lambda: cp.kubectl("get", "sa", "spend-gateway", "-n", namespace).returncode == 0, 60)
        token = cp.kubectl("create", "token", "spend-gateway", "-n", namespace, check=True).stdout.strip()
        kubeconfig = cp.token_kubeconfig(token, tmp_path / "gw-kubeconfig", user="gateway", namespace=namespace)
        port = free_port()
        gw = Process([binary(), "gateway", "--kubernetes", "--fleet", "spend", "--namespace", namespace,
                      "--listen", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"], env={"KUBECONFIG": str(kubeconfig)})
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=gw.proc)

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-spender", max_retries=0)
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        for _ in range(3):
            r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi there"}])
            assert r.usage.prompt_tokens + r.usage.completion_tokens == 7

        def status():
            return (get(cp, "virtualkey", "spender", namespace) or {}).get("status", {})

        cp.wait_for("spend and conditions in status",
                    lambda: status().get("spend", {}).get("amount") == pytest.approx(3 * COST)
                    and {c["type"] for c in status().get("conditions", [])} >= {"Accepted", "Ready"}, 30)
        s = status()
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT00:00:00Z")
        assert s["spend"]["periodStart"] == today
        last = datetime.datetime.fromisoformat(s["lastUsed"].replace("Z", "+00:00"))
        assert before - datetime.timedelta(seconds=1) <= last <= datetime.datetime.now(datetime.timezone.utc)
        # Spend and the fleet reconcile's conditions live side by side, and stay so: one more
        # request, and a later spend pass writes it next to the conditions.
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi there"}])
        cp.wait_for("the fourth request's spend in status",
                    lambda: status().get("spend", {}).get("amount", 0) >= 4 * COST - 1e-9, 30)
        assert {c["type"] for c in status()["conditions"]} >= {"Accepted", "ResolvedRefs", "Ready"}
        assert status()["spend"]["amount"] == pytest.approx(4 * COST)
        # A key never used shows no spend and no last use.
        idle = (get(cp, "virtualkey", "idle", namespace) or {}).get("status", {})
        assert "spend" not in idle and "lastUsed" not in idle

        # Deleting the key deletes its counters from Redis before the key goes.
        scope = f"swy:{{k:{namespace}/spender}}"
        day = datetime.datetime.now(datetime.timezone.utc).strftime("d%Y-%m-%d")
        assert float(redis.cmd("GET", f"{scope}:spend:{day}")) == pytest.approx(4 * COST)
        assert redis.cmd("EXISTS", f"{scope}:last") == 1
        cp.kubectl("delete", "virtualkey", "spender", "-n", namespace, "--wait=true", "--timeout=60s", check=True)
        assert redis.cmd("EXISTS", f"{scope}:spend:{day}", f"{scope}:last") == 0
        assert get(cp, "virtualkey", "spender", namespace) is None
    finally:
        if gw:
            gw.stop()
            print(gw.output()[-5000:])
        redis.stop()
