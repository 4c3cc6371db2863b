"""Budgets over groups of keys (`kind: Budget`) on real gateway processes sharing a real
`redis-server`: exact across replicas, refused like a key budget, alerted through the webhook,
loaded and checked by standalone mode and `switchyard validate`.

Prices as in test_limits.py: $1000 per million tokens, so a "hi there" request costs $0.007.
"""

import hashlib
import hmac
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from harness import binary
from test_limits import COST, Receiver, chat, redis, today, wait_for, write_config  # noqa: F401

TEAM = "  labels: {team: search}\n"

BUDGET = """apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {{name: search, namespace: default}}
spec:
  selector: {{matchLabels: {{team: search}}}}
  maxSpend: {max_spend}
  period: daily
  alertThresholds: [50]
  webhook:
    url: {url}
    signingSecretRef: {{name: alice-key, key: webhookSecret}}
"""


def team_spend(redis, budget, period):
    v = redis.cmd("GET", f"swy:{{t:{budget}}}:spend:{period}")
    return float(v) if v else 0.0


def team_config(path, receiver_url, max_spend=0.1):
    keys = [
        ("alice", "sk-alice", TEAM),
        ("bob", "sk-bob", TEAM),
        # Selected by its metadata label rather than spec.labels: written below.
        ("carol", "sk-carol", ""),
        # Not in the team: the Budget never refuses it.
        ("dave", "sk-dave", "  labels: {team: ads}\n"),
    ]
    cfg = write_config(path, keys=keys)
    text = (cfg / "default-keys.yaml").read_text()
    text = text.replace("metadata: {name: carol, namespace: default}",
                        "metadata: {name: carol, namespace: default, labels: {team: search}}")
    (cfg / "default-keys.yaml").write_text(text)
    (cfg / "budgets.yaml").write_text(BUDGET.format(max_spend=max_spend, url=receiver_url))
    return cfg


def test_three_keys_two_gateways_one_budget(tmp_path, gateway_on, redis):
    receiver = Receiver()
    cfg = team_config(tmp_path / "cfg", receiver.url)
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(cfg, env=env), gateway_on(cfg, env=env)
    keys = ["sk-alice", "sk-bob", "sk-carol"]
    spent, ok, waves, refusals = 0.0, 0, 0, []
    while True:
        waves += 1
        assert waves < 30, "the Budget never blocked"
        with ThreadPoolExecutor(max_workers=30) as pool:
            results = list(pool.map(
                lambda i: (i, chat(a if i % 2 else b, keys[i % 3], max_tokens=8)), range(30)))
        codes = set()
        for i, r in results:
            if r.status_code == 200:
                spent += COST
                ok += 1
            else:
                assert r.status_code == 429, r.text
                err = r.json()["error"]
                codes.add(err["code"])
                refusals.append((keys[i % 3], r))
        print("wave", waves, "ok", ok, "spent", round(spent, 6), "refusals", sorted(codes))
        if codes == {"budget_exceeded"} and all(r.status_code == 429 for _, r in results):
            break
    # The three keys together spent the Budget and went past it by less than one request.
    assert 0.1 - 1e-9 <= spent <= 0.1 + COST + 1e-9, (spent, ok, waves)
    wait_for(lambda: abs(team_spend(redis, "default/search", today()) - spent) < 1e-9,
             what="the Budget's spend in redis")
    # Each key's own spend was counted too; together they are the Budget's.
    per_key = [float(redis.cmd("GET", f"swy:{{k:default/{k}}}:spend:{time.strftime('m%Y-%m', time.gmtime())}") or 0)
               for k in ("alice", "bob", "carol")]
    assert all(s > 0 for s in per_key), per_key
    assert abs(sum(per_key) - spent) < 1e-9, (per_key, spent)
    # Refused like a key budget (429, insufficient_quota, retry-after), naming the Budget.
    for key, r in refusals:
        err = r.json()["error"]
        assert err["type"] == "insufficient_quota", err
        assert err["code"] in ("budget_exceeded", "budget_reserved"), err
        assert "Budget `default/search`" in err["message"], err
        assert int(r.headers["retry-after"]) >= 1
    r = chat(a, "sk-carol")
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("insufficient_quota", "budget_exceeded")
    assert err["message"].startswith(
        "Budget exceeded for Budget `default/search`, which key `default/carol` falls under"), err
    assert "resets at" in err["message"]
    # A key the Budget does not select is served.
    assert chat(b, "sk-dave").status_code == 200
    # The 50% alert went out once across both gateways (the first POST was refused and retried),
    # signed, naming the Budget.
    alerts = wait_for(lambda: [(h, json.loads(body), body) for h, body in receiver.deliveries
                               if json.loads(body)["type"] == "team_budget.threshold"],
                      what="the Budget's alert")
    time.sleep(1)
    assert len([1 for _, body in receiver.deliveries if json.loads(body)["type"] == "team_budget.threshold"]) == 1
    headers, alert, body = alerts[0]
    assert alert["budget"] == "default/search" and alert["thresholdPercent"] == 50, alert
    assert alert["key"] in ("default/alice", "default/bob", "default/carol"), alert
    # The spend the claiming replica saw: past the threshold (settlements race, so not always
    # the very request that crossed it).
    assert 0.05 <= alert["spend"] <= spent + 1e-9 and alert["maxSpend"] == 0.1, alert
    assert alert["period"] == "daily" and alert["periodId"] == today(), alert
    ts = headers["x-switchyard-timestamp"]
    want = hmac.new(b"whsec-test", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["x-switchyard-signature"] == "sha256=" + want
    # Each replica exports the Budget's spend as of the last request it settled (no key in the
    # labels); the one that settled last saw the whole fleet's spend.
    def gauge(gw):
        for line in httpx.get(gw.metrics_url + "/metrics").text.splitlines():
            if (line.startswith("switchyard_team_budget_spend_usd{") and 'budget="search"' in line
                    and 'namespace="default"' in line):
                return float(line.split()[-1])
        return None
    seen = [gauge(g) for g in (a, b)]
    assert all(s is not None and 0 < s <= spent + 1e-9 for s in seen), seen
    assert abs(max(seen) - spent) < 1e-9, (seen, spent)


def test_budgets_are_validated_with_file_and_line(tmp_path):
    cfg = team_config(tmp_path / "cfg", "http://127.0.0.1:9/hook")
    (cfg / "more.yaml").write_text("""apiVersion: switchyard.dev/v1alpha1
kind: Budget
metadata: {name: odd}
spec:
  maxSpend: 1
  selector:
    matchExpressions:
      - {key: team, operator: Near, values: [x]}
""")
    r = subprocess.run([binary(), "validate", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    assert f"{cfg / 'more.yaml'}:8: Budget/odd: spec.selector.matchExpressions[0]: operator \"Near\"" in r.stdout + r.stderr, r
    (cfg / "more.yaml").write_text("apiVersion: switchyard.dev/v1alpha1\nkind: Budget\nmetadata: {name: zero}\nspec:\n  maxSpend: 0\n")
    r = subprocess.run([binary(), "validate", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert f"{cfg / 'more.yaml'}:4: Budget/zero: spec: maxSpend must be positive" in out, out
    (cfg / "more.yaml").unlink()
    r = subprocess.run([binary(), "validate", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_limits_example_counts_its_team_budget(tmp_path, gateway_on):
    from harness import copy_example
    gw = gateway_on(copy_example("limits", tmp_path))
    r = chat(gw, "sk-switchyard-limited", model="limited-chat")
    assert r.status_code == 200, r.text

    def gauge(name):
        for line in httpx.get(gw.metrics_url + "/metrics").text.splitlines():
            if line.startswith(name + "{") and 'budget="demo"' in line and 'namespace="default"' in line:
                return float(line.split()[-1])
        return None
    assert wait_for(lambda: gauge("switchyard_team_budget_spend_usd"), what="the Budget's spend") > 0
    assert gauge("switchyard_team_budget_max_usd") == 5.0
