"""Virtual keys, limits, budgets, spend alerts and the response cache, against real gateway
processes and real `redis-server` processes that each test starts on a free 127.0.0.1 port.

Prices: the routes here cost $1000 per million tokens, so a request of "hi there" (2 prompt
tokens, "Hello! You said: hi there" = 5 completion tokens with the mock) costs $0.007.
"""

import hashlib
import hmac
import http.server
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from harness import RedisServer, copy_example, free_port

COST = 0.007
MSG = [{"role": "user", "content": "hi there"}]

# --- Redis ----------------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path):
    """A fresh redis-server; the test fails (it is not skipped) when redis-server is missing."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def spend_key(key, period):
    """Where a key's spend lives in Redis (what the operator folds into VirtualKey status)."""
    return f"swy:{{k:{key}}}:spend:{period}"


def today():
    return time.strftime("d%Y-%m-%d", time.gmtime())


def this_month():
    return time.strftime("m%Y-%m", time.gmtime())


def redis_spend(redis, key, period):
    v = redis.cmd("GET", spend_key(key, period))
    return float(v) if v else 0.0


def wait_for(predicate, timeout=10.0, what="condition", interval=0.05):
    """The first truthy value of `predicate()`; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def wait_value(get, ok, what, timeout=10.0):
    """The first value of `get()` that `ok` accepts; fails after `timeout` s, showing the last."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last value {value!r}"
        time.sleep(0.05)


# --- Config ---------------------------------------------------------------------------------

PROVIDER = """apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: {ns}}}
spec:
  type: mock
  mock: {{embeddingDimensions: 8{response}}}
"""

ROUTE = """apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: {model}, namespace: {ns}}}
spec:
  model: {model}
{extra}  backends:
    - providerRef: {{name: mock}}
      model: mock-model
      maxOutputTokens: 64
      pricing: {{input: 1000, output: 1000}}
"""

KEY = """apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: {name}, namespace: {ns}}}
spec:
  secretRef: {{name: {name}-key}}
{spec}---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: {ns}}}
stringData: {{key: {value}, webhookSecret: whsec-test}}
"""


def write_config(path, keys, routes=(("chat", ""),), ns="default", gateway=None, response=None):
    """A folder with the mock provider, `routes` as (model, extra spec lines) and `keys` as
    (name, value, spec lines)."""
    path.mkdir(parents=True, exist_ok=True)
    resp = f", response: {json.dumps(response)}" if response else ""
    (path / f"{ns}-providers.yaml").write_text(PROVIDER.format(ns=ns, response=resp))
    (path / f"{ns}-routes.yaml").write_text(
        "---\n".join(ROUTE.format(model=m, ns=ns, extra=extra) for m, extra in routes)
    )
    (path / f"{ns}-keys.yaml").write_text(
        "---\n".join(KEY.format(name=n, value=v, ns=ns, spec=spec) for n, v, spec in keys)
    )
    if gateway:
        (path / "gateway.yaml").write_text(gateway)
    return path


def redis_gateway(url, fail_mode):
    return f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: gw, namespace: default}}
spec:
  redis: {{url: "{url}", failMode: {fail_mode}}}
"""


def post(gw, key, body, headers=None, path="/v1/chat/completions"):
    h = {"authorization": f"Bearer {key}"}
    h.update(headers or {})
    r = httpx.post(gw.url + path, json=body, headers=h, timeout=30)
    return r


def chat(gw, key, model="chat", **extra):
    return post(gw, key, {"model": model, "messages": MSG, **extra})


def cost_of(r):
    u = r.json()["usage"]
    return (u["prompt_tokens"] + u["completion_tokens"]) * 0.001


# --- The example ----------------------------------------------------------------------------


def test_example_key_gets_ten_requests_a_minute(tmp_path, gateway_on):
    gw = gateway_on(copy_example("limits", tmp_path))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-switchyard-limited", max_retries=0)
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(model="limited-chat", messages=MSG)
        assert raw.headers["x-ratelimit-limit-requests"] == "10"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(9 - i)
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited-chat", messages=MSG)
    assert e.value.code == "rate_limit_exceeded"
    h = e.value.response.headers
    assert 50 <= int(h["retry-after"]) <= 60
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("10", "0")
    # The same key as `x-api-key` (Anthropic's header) is the same key, with the same window.
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"x-api-key": "sk-switchyard-limited"},
                   json={"model": "limited-chat", "messages": MSG})
    assert r.status_code == 429
    models = {m.id for m in client.models.list()}
    assert models == {"limited-chat", "cached-chat"}


# --- Limits across replicas -----------------------------------------------------------------


def test_two_gateways_sharing_redis_enforce_rpm_exactly(tmp_path, gateway_on, redis):
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-rpm", "  limits: {rpm: 20}\n")])
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda i: chat(a if i % 2 else b, "sk-rpm"), range(60)))
    codes = [r.status_code for r in results]
    assert codes.count(200) == 20, codes
    assert codes.count(429) == 40, codes
    for r in results:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    # Both replicas served some of the 20: the window is one.
    served = {r.headers["x-switchyard-route"] for r in results if r.status_code == 200}
    assert served == {"default/chat"}
    assert 0 < sum(1 for i, r in enumerate(results) if r.status_code == 200 and i % 2) < 20


def test_two_gateways_sharing_redis_hold_a_provider_quota_exactly(tmp_path, gateway_on, redis):
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-pq", "")])
    providers = config / "default-providers.yaml"
    providers.write_text(providers.read_text() + "  quota: {rpm: 12}\n")
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: chat(a if i % 2 else b, "sk-pq"), range(30)))
    codes = [r.status_code for r in results]
    # The provider's rpm across both replicas, not each: the rest wait like a cooling backend.
    assert codes.count(200) == 12, codes
    assert codes.count(503) == 18, codes
    for r in results:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
    assert 0 < sum(1 for i, r in enumerate(results) if r.status_code == 200 and i % 2) < 12


def test_budget_under_50_concurrent_requests_overshoots_by_at_most_one(tmp_path, gateway_on, redis):
    spec = "  budget: {maxSpend: 0.1, period: daily, action: block}\n"
    config = write_config(tmp_path / "cfg", keys=[("spender", "sk-budget", spec)])
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    spent, ok, waves = 0.0, 0, 0
    while True:
        waves += 1
        assert waves < 30, "the budget never blocked"
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda i: chat(a if i % 2 else b, "sk-budget", max_tokens=8), range(50)))
        codes = set()
        for r in results:
            if r.status_code == 200:
                spent += cost_of(r)
                ok += 1
            else:
                assert r.status_code == 429, r.text
                codes.add(r.json()["error"]["code"])
                assert int(r.headers["retry-after"]) >= 1
        if codes == {"budget_exceeded"} and all(r.status_code == 429 for r in results):
            break
    # Blocked only once spent, and past the budget by less than one request.
    assert 0.1 - 1e-9 <= spent <= 0.1 + COST + 1e-9, (spent, ok, waves)
    assert ok == round(spent / COST)
    # Every cent is in Redis (settled after each response).
    wait_for(lambda: abs(redis_spend(redis, "default/spender", today()) - spent) < 1e-9, what="spend in redis")
    r = chat(a, "sk-budget")
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "resets at" in err["message"]


# --- Periods and alerts ---------------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """Records webhook deliveries; refuses the very first one (500) to show retries."""

    def __init__(self):
        self.deliveries = []  # (headers, body) of each accepted POST
        self.attempted = []  # the alert's key, per POST (refused ones included)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    first = not receiver.attempted
                    receiver.attempted.append(json.loads(body)["key"])
                    if not first:
                        receiver.deliveries.append((dict(self.headers), body))
                self.send_response(500 if first else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/alerts"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def alerts(self, key):
        """The accepted alerts of `key`: (headers, body)."""
        with self.lock:
            return [(h, b) for h, b in self.deliveries if json.loads(b)["key"] == key]


def test_period_resets_and_each_threshold_is_alerted_once(tmp_path, gateway_on, redis):
    receiver = Receiver()

    def webhook_budget(max_spend, thresholds, secret):
        return f"""  budget:
    maxSpend: {max_spend}
    period: daily
    alertThresholds: {thresholds}
    webhook:
      url: {receiver.url}
      signingSecretRef: {{name: {secret}, key: webhookSecret}}
"""
    # The sentinels' one request each crosses their 100% threshold: their alerts, sent after
    # everything else, show that anything sent before them has arrived.
    keys = [("alerted", "sk-alerted", webhook_budget(0.03, "[50, 80, 100]", "alerted-key"))]
    keys += [(f"sentinel-{g}", f"sk-sentinel-{g}", webhook_budget(0.001, "[100]", f"sentinel-{g}-key"))
             for g in ("a", "b")]
    config = write_config(tmp_path / "cfg", keys=keys)
    # The gateways' clock is set to `lead` seconds before the next UTC midnight: time enough to
    # start both and spend a day's budget on a loaded machine; the test then waits for midnight.
    lead = 20.0
    now = time.time()
    midnight = (int(now) // 86400 + 1) * 86400
    env = {"SWITCHYARD_REDIS_URL": redis.url, "SWITCHYARD_CLOCK_OFFSET_SECS": str(midnight - lead - now)}
    started = time.monotonic()
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    day1 = time.strftime("d%Y-%m-%d", time.gmtime(midnight - 1))
    day2 = time.strftime("d%Y-%m-%d", time.gmtime(midnight + 1))

    def spend_until_blocked(start=0):
        served = 0
        for i in range(start, start + 20):
            r = chat(a if i % 2 else b, "sk-alerted")
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "budget_exceeded"
                return served, r
            assert r.status_code == 200, r.text
            served += 1
        raise AssertionError("never blocked")

    served, refused = spend_until_blocked()
    assert served == 5  # 5 x $0.007 = $0.035 >= $0.03
    assert int(refused.headers["retry-after"]) <= lead
    wait_for(lambda: len(receiver.alerts("default/alerted")) == 3, what="three alerts")
    assert time.monotonic() - started < lead - 1, (
        f"the test machine is too slow for this clock offset: the first day took "
        f"{time.monotonic() - started:.1f} s of {lead:.0f} s")

    # Midnight (UTC, on the gateways' clock): a new period, a new budget. Until then the key
    # stays blocked; the first request served is the new day's first.
    def new_day():
        r = chat(a, "sk-alerted")
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "budget_exceeded", r.text
            return None
        assert r.status_code == 200, r.text
        return r
    wait_for(new_day, timeout=lead + 30, what="the budget to reset at midnight", interval=0.1)
    assert time.monotonic() - started >= lead - 0.5, "the budget reset before midnight"
    served, _ = spend_until_blocked(start=1)
    assert served + 1 == 5

    # Nothing more arrives: both days' spend is settled in Redis (every threshold check made),
    # then the sentinels' alerts, sent after those checks from each gateway, arrive.
    for day in (day1, day2):
        wait_for(lambda: abs(redis_spend(redis, "default/alerted", day) - 5 * COST) < 1e-9, what=f"{day} spend")
    for gw, sentinel in ((a, "sk-sentinel-a"), (b, "sk-sentinel-b")):
        assert chat(gw, sentinel).status_code == 200
    wait_for(lambda: receiver.alerts("default/sentinel-a") and receiver.alerts("default/sentinel-b"),
             what="the sentinels' alerts")
    assert len(receiver.alerts("default/alerted")) == 6
    assert receiver.attempted.count("default/alerted") == 7  # the refused first attempt was retried

    seen = []
    for headers, body in receiver.alerts("default/alerted"):
        headers = {k.lower(): v for k, v in headers.items()}
        expected = hmac.new(b"whsec-test", headers["x-switchyard-timestamp"].encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        assert headers["x-switchyard-signature"] == "sha256=" + expected
        alert = json.loads(body)
        assert alert["type"] == "budget.threshold"
        assert alert["key"] == "default/alerted"
        assert alert["spend"] >= alert["maxSpend"] * alert["thresholdPercent"] / 100
        seen.append((alert["periodId"], alert["thresholdPercent"]))
    assert sorted(seen) == sorted((d, t) for d in (day1, day2) for t in (50, 80, 100))
    assert abs(redis_spend(redis, "default/alerted", day1) - 5 * COST) < 1e-9
    assert abs(redis_spend(redis, "default/alerted", day2) - 5 * COST) < 1e-9
    receiver.shutdown()


# --- Cache ----------------------------------------------------------------------------------


def sse(gw, key, body, headers=None):
    h = {"authorization": f"Bearer {key}"}
    h.update(headers or {})
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=h, timeout=30) as r:
        chunks = list(r.iter_raw())
        return r, b"".join(chunks), len(chunks)


def cache_entries(redis):
    return set(redis.cmd("KEYS", "swy:cache:*"))


def test_cache_hits_are_identical_streams_included_and_free(tmp_path, gateway_on, redis):
    routes = [("cached", "  cache: {enabled: true, ttl: 10m}\n")]
    config = write_config(tmp_path / "cfg", routes=routes, keys=[("c", "sk-cache", "")])
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    a, b = gateway_on(config, env=env), gateway_on(config, env=env)
    key = "default/c"

    def stored(before, what):
        """The one entry stored since `before` (entries are written after the response)."""
        new = wait_for(lambda: cache_entries(redis) - before, what=what)
        assert len(new) == 1, new
        return new.pop()

    first = chat(a, "sk-cache", model="cached")
    assert first.headers["x-switchyard-cache"] == "miss"
    stored(set(), "the first answer in the cache")
    wait_for(lambda: redis_spend(redis, key, this_month()) > 0, what="spend")
    spend = redis_spend(redis, key, this_month())
    assert abs(spend - COST) < 1e-9
    # The other replica answers from the shared cache: the same bytes (same id, same created).
    hit = chat(b, "sk-cache", model="cached")
    assert hit.headers["x-switchyard-cache"] == "hit"
    assert hit.content == first.content
    # A differently ordered but equal request is the same entry.
    same = post(b, "sk-cache", {"messages": MSG, "model": "cached"})
    assert same.headers["x-switchyard-cache"] == "hit" and same.content == first.content

    body = {"model": "cached", "messages": MSG, "stream": True}
    before = cache_entries(redis)
    r1, s1, _ = sse(a, "sk-cache", body)
    assert r1.headers["x-switchyard-cache"] == "miss"
    stored(before, "the streamed answer in the cache")
    r2, s2, n2 = sse(b, "sk-cache", body)
    assert r2.headers["x-switchyard-cache"] == "hit"
    assert r2.headers["content-type"].startswith("text/event-stream")
    assert s2 == s1 and s2.endswith(b"data: [DONE]\n\n")
    assert n2 > 1, "a hit is replayed as a stream, not one body"
    metrics = httpx.get(b.metrics_url + "/metrics").text
    assert 'switchyard_cache_total{result="hit",route="default/cached"}' in metrics

    # no-cache: fresh answer (and stored); no-store: never stored; a per-request TTL.
    fresh = chat(a, "sk-cache", model="cached", **{})
    assert fresh.headers["x-switchyard-cache"] == "hit"
    bypass = post(a, "sk-cache", {"model": "cached", "messages": MSG}, headers={"cache-control": "no-cache"})
    assert bypass.headers["x-switchyard-cache"] == "miss" and bypass.content != first.content
    # Hits cost nothing: the two misses were billed, and the third (settled after every hit
    # above) brings the total to three.
    wait_for(lambda: redis_spend(redis, key, this_month()) >= 3 * COST - 1e-9, what="the third miss's spend")
    assert abs(redis_spend(redis, key, this_month()) - 3 * COST) < 1e-9
    other = [{"role": "user", "content": "not stored"}]
    before = cache_entries(redis)
    for _ in range(2):
        r = post(a, "sk-cache", {"model": "cached", "messages": other}, headers={"cache-control": "no-store"})
        assert r.headers["x-switchyard-cache"] == "miss"
    short = [{"role": "user", "content": "short lived"}]
    post(a, "sk-cache", {"model": "cached", "messages": short}, headers={"x-switchyard-cache-ttl": "1"})
    entry = stored(before, "the short-lived entry")
    # The no-store answers were not stored: the only new entry is the short-lived one, kept 1 s.
    assert 0 < redis.cmd("PTTL", entry) <= 1000
    assert post(a, "sk-cache", {"model": "cached", "messages": short}).headers["x-switchyard-cache"] == "hit"
    wait_for(lambda: redis.cmd("EXISTS", entry) == 0, what="the short-lived entry to expire")
    before = cache_entries(redis)
    assert post(a, "sk-cache", {"model": "cached", "messages": short}).headers["x-switchyard-cache"] == "miss"
    # Stored again (after the response): waited for, so it is not taken for the next entry.
    stored(before, "the short-lived answer stored again")
    # A client cannot keep an entry longer than the route does: a year asked, the route's 10 m kept.
    before = cache_entries(redis)
    year = [{"role": "user", "content": "keep this a year"}]
    post(a, "sk-cache", {"model": "cached", "messages": year}, headers={"x-switchyard-cache-ttl": "31536000"})
    entry = stored(before, "the entry asked to live a year")
    assert 590_000 < redis.cmd("PTTL", entry) <= 600_000


# --- Redis outages --------------------------------------------------------------------------


def test_redis_down_fail_closed_refuses_then_recovers(tmp_path, gateway_on, redis):
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-closed", "  limits: {rpm: 1000}\n")],
                          gateway=redis_gateway(redis.url, "closed"))
    gw = gateway_on(config)
    assert chat(gw, "sk-closed").status_code == 200
    redis.stop()
    r = chat(gw, "sk-closed")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable"
    assert r.headers["retry-after"] == "1"
    assert chat(gw, "sk-closed").status_code == 503
    redis.start()
    wait_for(lambda: chat(gw, "sk-closed").status_code == 200, what="recovery")


def test_redis_down_fail_open_limits_locally_and_keeps_spend(tmp_path, gateway_on, redis):
    spec = "  limits: {rpm: 3}\n  budget: {maxSpend: 100, period: monthly}\n"
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-open", spec)])
    gw = gateway_on(config, env={"SWITCHYARD_REDIS_URL": redis.url})
    assert [chat(gw, "sk-open").status_code for _ in range(2)] == [200, 200]
    wait_for(lambda: abs(redis_spend(redis, "default/k", this_month()) - 2 * COST) < 1e-9, what="spend")

    redis.stop()
    # Served with this process's own window (which has not seen the first two).
    codes = [chat(gw, "sk-open").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429], codes

    redis.start()
    # Spend counted during the outage reaches Redis; shared limits are back (2 of 3 used).
    wait_for(lambda: abs(redis_spend(redis, "default/k", this_month()) - 5 * COST) < 1e-9, what="queued spend")
    wait_for(lambda: chat(gw, "sk-open").status_code == 200, what="shared window")
    assert chat(gw, "sk-open").status_code == 429


def test_restarted_gateway_keeps_the_spend_it_counted(tmp_path, gateway_on, redis):
    spec = "  budget: {maxSpend: 0.03, period: daily}\n"
    config = write_config(tmp_path / "cfg", keys=[("k", "sk-restart", spec)])
    env = {"SWITCHYARD_REDIS_URL": redis.url}
    gw = gateway_on(config, env=env)
    assert [chat(gw, "sk-restart").status_code for _ in range(3)] == [200, 200, 200]
    gw.terminate()
    gw.proc.wait(timeout=30)
    assert abs(redis_spend(redis, "default/k", today()) - 3 * COST) < 1e-9
    gw = gateway_on(config, env=env)
    # 3 more fit ($0.042 > $0.03 after the fifth), then the budget blocks.
    codes = [chat(gw, "sk-restart").status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429], codes
    # Settled after each response: the two served are added, the refused ones are not.
    wait_for(lambda: redis_spend(redis, "default/k", today()) >= 5 * COST - 1e-9, what="the new spend")
    assert abs(redis_spend(redis, "default/k", today()) - 5 * COST) < 1e-9


def gauge(gw, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(gw.metrics_url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return None


def test_budget_gauges_by_team_and_last_use_in_redis(tmp_path, gateway_on, redis):
    keys = [
        ("s1", "sk-search-1", "  budget: {maxSpend: 0.05, period: daily}\n  labels: {team: search}\n"),
        ("s2", "sk-search-2", "  budget: {maxSpend: 0.10, period: monthly, action: alert}\n  labels: {team: search}\n"),
        ("a1", "sk-ads-1", "  budget: {maxSpend: 1.0, period: total}\n  labels: {team: ads}\n"),
        ("free", "sk-free", "  labels: {team: free}\n"),
    ]
    config = write_config(tmp_path / "cfg", keys=keys)
    gw = gateway_on(config, env={"SWITCHYARD_REDIS_URL": redis.url})
    assert gauge(gw, "switchyard_budget_used_ratio", team="search") is None  # nothing settled yet
    started = time.time()
    for key, n in (("sk-search-1", 6), ("sk-search-2", 1), ("sk-ads-1", 2), ("sk-free", 1)):
        for _ in range(n):
            assert chat(gw, key).status_code == 200
    # search: s1 spent 6 x $0.007 = $0.042 of $0.05 (84%), s2 $0.007 of $0.10. The gauges follow
    # each request's settling: wait for the last ones.
    wait_value(lambda: (gauge(gw, "switchyard_budget_used_ratio", team="search"),
                        gauge(gw, "switchyard_budget_remaining_usd", team="search"),
                        gauge(gw, "switchyard_budget_used_ratio", team="ads")),
               lambda v: None not in v and v == (pytest.approx(0.84), pytest.approx(0.101), pytest.approx(0.014)),
               what="the budget gauges")
    assert gauge(gw, "switchyard_budget_used_ratio", team="search") == pytest.approx(0.84)
    assert gauge(gw, "switchyard_budget_remaining_usd", team="search") == pytest.approx(0.008 + 0.093)
    assert gauge(gw, "switchyard_budget_used_ratio", team="ads") == pytest.approx(0.014)
    assert gauge(gw, "switchyard_budget_remaining_usd", team="ads") == pytest.approx(0.986)
    # A key without a budget has nothing to run out of: no series for its team.
    assert gauge(gw, "switchyard_budget_remaining_usd", team="free") is None
    # The key's last use is in Redis for the operator's VirtualKey status (ms since the epoch).
    for key in ("s1", "s2", "a1", "free"):
        last = int(redis.cmd("GET", f"swy:{{k:default/{key}}}:last")) / 1000
        assert started - 1 <= last <= time.time() + 1, key
    assert 0 < redis.cmd("PTTL", "swy:{k:default/free}:last") <= 35 * 86400 * 1000


# --- Tenants --------------------------------------------------------------------------------


def test_tenants_see_their_own_routes_and_only_what_is_shared(tmp_path, gateway_on):
    config = tmp_path / "cfg"
    write_config(config, ns="team-a", keys=[("alice", "sk-team-a", "")], response="from team-a")
    write_config(config, ns="team-b", keys=[("bob", "sk-team-b", "")], response="from team-b")
    gw = gateway_on(config)
    a = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-team-a", max_retries=0)
    b = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-team-b", max_retries=0)

    def say(client, model):
        return client.chat.completions.create(model=model, messages=MSG).choices[0].message.content

    assert say(a, "chat") == "from team-a"
    assert say(b, "chat") == "from team-b"
    assert say(a, "team-a/chat") == "from team-a"
    with pytest.raises(openai.NotFoundError):
        say(a, "team-b/chat")
    assert [m.id for m in a.models.list()] == ["chat"]

    routes = config / "team-b-routes.yaml"
    routes.write_text(routes.read_text().replace("  backends:", "  sharedWith: [team-a]\n  backends:"))
    wait_for(lambda: "team-b/chat" in [m.id for m in a.models.list()], what="the shared route")
    assert say(a, "team-b/chat") == "from team-b"
    assert say(a, "chat") == "from team-a"
    # Sharing is one way.
    with pytest.raises(openai.NotFoundError):
        say(b, "team-a/chat")



def test_a_route_shared_across_namespaces_caches_per_tenant_unless_it_opts_in(tmp_path, gateway_on):
    """One tenant must not be answered from another's cache entry (it would learn what the other
    asked), unless the route says `cache.shared: true`."""
    config = tmp_path / "cfg"
    write_config(config, ns="team-a", keys=[("alice", "sk-team-a", "")])
    write_config(config, ns="team-b", keys=[("bob", "sk-team-b", "")],
                 routes=[("chat", "  sharedWith: [team-a]\n  cache: {enabled: true, ttl: 10m}\n")])
    gw = gateway_on(config)
    secret = {"messages": [{"role": "user", "content": "our merger with ACME closes friday"}]}

    def ask(key, model):
        r = post(gw, key, {"model": model, **secret})
        assert r.status_code == 200, r.text
        return r.headers["x-switchyard-cache"]

    assert ask("sk-team-b", "chat") == "miss"
    assert wait_value(lambda: ask("sk-team-b", "chat"), lambda v: v == "hit", "bob's answer cached") == "hit"
    # Alice asks the same on the same route: a miss, her own entry from now on.
    assert ask("sk-team-a", "team-b/chat") == "miss"
    assert wait_value(lambda: ask("sk-team-a", "team-b/chat"), lambda v: v == "hit", "alice's own entry") == "hit"

    routes = config / "team-b-routes.yaml"
    routes.write_text(routes.read_text().replace("ttl: 10m}", "ttl: 10m, shared: true}"))
    asked = iter(range(1000))

    def alice_gets_bobs_answer():
        # A new question each time, until the edited route is loaded: bob's answer, once cached,
        # is alice's hit.
        q = {"messages": [{"role": "user", "content": f"a question for everyone, take {next(asked)}"}]}
        assert post(gw, "sk-team-b", {"model": "chat", **q}).headers["x-switchyard-cache"] == "miss"
        wait_value(lambda: post(gw, "sk-team-b", {"model": "chat", **q}).headers["x-switchyard-cache"],
                   lambda v: v == "hit", "bob's answer cached")
        return post(gw, "sk-team-a", {"model": "team-b/chat", **q}).headers["x-switchyard-cache"] == "hit"

    wait_for(alice_gets_bobs_answer, what="alice answered from bob's entry once the cache is shared")