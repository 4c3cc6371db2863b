"""`Budget` on a real API server: the operator compiles it into the fleet's config (the gateway
refuses a key once the Budget covering it is spent) and folds the Budget's spend, read from
the fleet's Redis, into its status."""

import datetime

import openai
import pytest

from harness import Process, RedisServer, binary, free_port, wait_http
from test_spend import COST, fast_operator, get, manifests  # noqa: F401

BUDGET = """apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {{name: everyone, namespace: {ns}}}
spec:
  maxSpend: {max_spend}
  period: daily
"""


def test_budget_status_shows_spend_and_the_budget_holds(control_plane, fast_operator, namespace, tmp_path):
    cp = control_plane
    redis = RedisServer(tmp_path)
    gw = None
    try:
        # An empty selector: both keys of the namespace. Room for a bit more than two requests.
        cp.kubectl("apply", "-f", "-", input=manifests(namespace, redis.url), check=True)
        cp.kubectl("apply", "-f", "-", input=BUDGET.format(ns=namespace, max_spend=2.5 * COST), check=True)
        cp.wait_for("fleet serviceaccount",
                    lambda: cp.kubectl("get", "sa", "spend-gateway", "-n", namespace).returncode == 0, 60)
        token = cp.kubectl("create", "token", "spend-gateway", "-n", namespace, check=True).stdout.strip()
        kubeconfig = cp.token_kubeconfig(token, tmp_path / "gw-kubeconfig", user="gateway", namespace=namespace)
        port = free_port()
        gw = Process([binary(), "gateway", "--kubernetes", "--fleet", "spend", "--namespace", namespace,
                      "--listen", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"],
                     env={"KUBECONFIG": str(kubeconfig)})
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=gw.proc)

        def call(key):
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
            return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi there"}])

        def status():
            return (get(cp, "budget", "everyone", namespace) or {}).get("status", {})

        # The Budget reaches the gateway with the fleet's config; until then requests are free.
        cp.wait_for("the Budget in the fleet's status", lambda: status().get("keys") == 2, 60)
        # The operator counts the keys before the gateway is served them (a loaded API server
        # took 8 s to apply a shard once): wait for both keys on a call that spends nothing.
        def served(key):
            return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0).models.list()

        cp.wait_for("both keys served by the gateway",
                    lambda: all(_ok(lambda: served(k)) for k in ("sk-spender", "sk-idle")), 60)
        spent = 0
        for key in ("sk-spender", "sk-idle", "sk-spender"):
            call(key)
            spent += 1
        # Spent ($0.021 of $0.0175): both keys are refused, naming the Budget.
        for key in ("sk-spender", "sk-idle"):
            with pytest.raises(openai.RateLimitError) as e:
                call(key)
            assert e.value.body["code"] == "budget_exceeded", e.value.body
            assert f"Budget `{namespace}/everyone`" in e.value.body["message"]
        cp.wait_for("the Budget's spend in status",
                    lambda: status().get("spend", {}).get("amount") == pytest.approx(spent * COST), 30)
        s = status()
        assert s["remaining"] == 0
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT00:00:00Z")
        assert s["spend"]["periodStart"] == today
        ready = [c for c in s["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", s
        # `kubectl get budgets` shows it.
        out = cp.kubectl("get", "budgets", "-n", namespace, check=True).stdout
        assert "everyone" in out and "0.02" in out, out
        scope = f"swy:{{t:{namespace}/everyone}}"
        day = datetime.datetime.now(datetime.timezone.utc).strftime("d%Y-%m-%d")
        assert float(redis.cmd("GET", f"{scope}:spend:{day}")) == pytest.approx(spent * COST)
    finally:
        if gw:
            gw.stop()
            print(gw.output()[-5000:])
        redis.stop()


def _ok(call):
    try:
        call()
        return True
    except openai.AuthenticationError:
        return False
