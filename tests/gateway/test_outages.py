"""Outages (issue 16, "The proof"), against real gateway and `redis-server` processes:

- Redis killed (SIGKILL) and restarted while requests keep coming: the configured fail mode holds
  throughout (docs/limits.md, "When Redis is unreachable"), the shared counters resume once Redis
  is back, and nothing is counted twice: the spend in Redis is exactly what the served requests
  cost, by the client's count and by the access log's.
- A gateway SIGKILLed with streams open: as docs/limits.md says ("In flight", "What a restart
  loses"), its slots and budget reservations are leases that lapse at most 15 minutes after they
  were taken, and the spend of the streams it was serving is lost. The test shows the leases
  hold until then and free the key once they lapse (their expiry is moved to the past in Redis
  rather than waiting 15 minutes), and that nothing of the killed streams is charged.
- A Redis that stalls past the gateway's 500 ms wait: what the gateway gave up on, Redis still
  does; the gateway undoes the slot and reservation and writes the spend once. What remains
  (AT_LEAST_ONCE: a window count) is reported as xfail by the kill test when it hits it.
"""

import json
import threading
import time

import httpx
import pytest

from harness import Gateway, RedisServer

COST = 0.007  # "hi there": 2 prompt + 5 completion tokens ("Hello! You said: hi there") at $1000/M
MSG = [{"role": "user", "content": "hi there"}]
LEASE_MS = 15 * 60 * 1000  # docs/limits.md: slots and reservations are leases of 15 minutes


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def month():
    return time.strftime("m%Y-%m", time.gmtime())


def spend(redis, key):
    v = redis.cmd("GET", f"swy:{{k:default/{key}}}:spend:{month()}")
    return float(v) if v else 0.0


def wait_value(get, ok, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last value {value!r}"
        time.sleep(0.05)


def config(path, redis_url, fail_mode="open", mock="{}", keys=()):
    path.mkdir()
    (path / "gateway.yaml").write_text(f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: gw, namespace: default}}
spec:
  redis: {{url: "{redis_url}", failMode: {fail_mode}}}
""")
    (path / "providers.yaml").write_text(f"""apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: default}}
spec:
  type: mock
  mock: {mock}
""")
    (path / "routes.yaml").write_text("""apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: default}
spec:
  model: chat
  backends:
    - providerRef: {name: mock}
      model: mock-model
      maxOutputTokens: 64
      pricing: {input: 1000, output: 1000}
""")
    docs = []
    for name, spec in keys:
        docs.append(f"""apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: {name}, namespace: default}}
spec:
  secretRef: {{name: {name}-key}}
{spec}---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: default}}
stringData: {{key: sk-{name}}}
""")
    (path / "keys.yaml").write_text("---\n".join(docs))
    return path


def access_log(gw):
    out = []
    for line in gw.output().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("target") == "switchyard::access":
            out.append(doc["fields"])
    return out


# --- Redis killed under load ------------------------------------------------------------------

AT_LEAST_ONCE = (
    "an admission that Redis ran but whose answer was lost (a timeout, a kill) stays in the key's "
    "rpm/tpm window for up to 60 s although the gateway refused the request (fail mode closed) or "
    "counted it locally: windows over-count by such requests, never under-count")


class Load:
    """Threads sending chat requests in a loop for `key`, each result recorded with its start
    and end (monotonic seconds)."""

    def __init__(self, gw, key, threads=2):
        self.gw = gw
        self.key = key
        self.results = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        with httpx.Client(base_url=self.gw.url, headers={"authorization": f"Bearer sk-{self.key}"},
                          timeout=30) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    r = client.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
                    result = (r.status_code, r.headers.get("retry-after"), r.text)
                except httpx.HTTPError as e:
                    result = (None, None, repr(e))
                with self.lock:
                    self.results.append((start, time.monotonic(), *result))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.results


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_redis_killed_and_restarted_under_load(tmp_path, redis, fail_mode):
    keys = [
        ("limited", "  limits: {rpm: 100000, maxParallel: 100}\n  budget: {maxSpend: 1000, period: monthly}\n"),
        ("free", ""),
    ]
    gw = Gateway(config(tmp_path / "config", redis.url, fail_mode, keys=keys),
                 env={"SWITCHYARD_LOG_FORMAT": "json", "SWITCHYARD_LOG": "info"})
    try:
        loads = {k: Load(gw, k) for k, _ in keys}
        time.sleep(1.5)
        killed = time.monotonic()
        redis.stop()  # SIGKILL
        time.sleep(2.5)
        redis.start()
        restarted = time.monotonic()
        time.sleep(3.0)
        results = {k: load.finish() for k, load in loads.items()}

        for key, rs in results.items():
            assert len(rs) > 20, (key, len(rs))
            before = [r for r in rs if r[1] < killed]
            late = [r for r in rs if r[0] > restarted + 1.0]
            assert before and late, (key, len(before), len(late))
            # Served before the outage and once Redis is back.
            assert {r[2] for r in before} == {200}, [r for r in before if r[2] != 200][:3]
            assert {r[2] for r in late} == {200}, [r for r in late if r[2] != 200][:3]
            refused = [r for r in rs if r[2] != 200]
            if fail_mode == "open" or key == "free":
                # `open`: served with the process's own limits; a key without limits or a
                # blocking budget is served in both modes.
                assert refused == [], refused[:3]
            else:
                # `closed`: the limited key is refused while Redis is down, with 503 and
                # retry-after: 1, and nothing else.
                assert refused, "no request was refused while Redis was down"
                for r in refused:
                    assert r[2] == 503 and r[3] == "1", r
                    assert json.loads(r[4])["error"]["code"] == "service_unavailable", r
                    assert killed - 0.1 <= r[0] <= restarted + 1.0, (r[0] - killed, restarted - killed)

        # Counters resume: spend of requests that ended during the outage is written once Redis
        # answers; nothing is lost. Every served request cost COST, by the client's count and by
        # the access log's.
        log = access_log(gw)
        known = []  # effects applied twice (see AT_LEAST_ONCE), checked last
        for key, rs in results.items():
            served = sum(1 for r in rs if r[2] == 200)
            logged = [f for f in log if f.get("key") == f"default/{key}" and f.get("status") == 200]
            assert len(logged) == served, (key, len(logged), served)
            logged_cost = sum(f["cost_usd"] for f in logged)
            assert abs(logged_cost - served * COST) < 1e-6, (key, logged_cost, served * COST)
            got = wait_value(lambda: spend(redis, key), lambda v: v >= logged_cost - 1e-6,
                             f"{key}'s spend in Redis to reach {served} x {COST}")
            time.sleep(0.5)  # anything queued is written by now (probes every 250 ms)
            got = spend(redis, key)
            # Settles carry a token Redis checks: one retried after a lost answer adds nothing.
            assert abs(got - logged_cost) < 1e-6, f"{key}: spend {got:.3f} in Redis for {logged_cost:.3f} served"

        # The shared windows and slots are Redis' again: the requests admitted through Redis
        # before the outage (kept by its append-only file) and after it are in the rpm window,
        # those served from local state during the outage are not; no slot or reservation is
        # left behind.
        limited = results["limited"]
        window = sum(int(v) for v in redis.cmd("HVALS", "swy:{k:default/limited}:rpm"))
        surely_shared = sum(1 for r in limited if r[2] == 200 and (r[1] < killed or r[0] > restarted + 1.0))
        admitted = sum(1 for r in limited if r[2] == 200)
        assert surely_shared <= window, (surely_shared, window)
        if window > admitted:
            known.append(f"rpm window {window} for {admitted} admitted")
        time.sleep(0.5)
        # An admission whose answer was lost is undone by name once Redis is back.
        for what in ("par", f"hold:{month()}"):
            held = wait_value(lambda: redis.cmd("ZCARD", f"swy:{{k:default/limited}}:{what}"), lambda n: n == 0,
                              f"nothing left in {what}")
            assert held == 0
        # The kill (or a call slower than 500 ms under load) may land between an admission's
        # effect and its answer; whether it does in a run is chance. When it did, say so as the
        # documented residual (AT_LEAST_ONCE) rather than as a flake.
        if known:
            pytest.xfail(AT_LEAST_ONCE + ": " + "; ".join(known))
    finally:
        gw.stop()
        print(gw.output()[-4000:])


# --- A gateway killed mid-stream --------------------------------------------------------------


def open_stream(gw, key):
    """A stream whose first chunk has arrived: (response, client) to be closed by the caller."""
    client = httpx.Client(timeout=30)
    req = client.build_request("POST", gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer sk-{key}"},
                               json={"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True,
                                     "stream_options": {"include_usage": True}})
    r = client.send(req, stream=True)
    assert r.status_code == 200, r.read()
    lines = r.iter_lines()
    first = next(line for line in lines if line.startswith("data: "))
    assert "chat.completion.chunk" in first
    return r, client, lines


def redis_now_ms(redis):
    sec, usec = redis.cmd("TIME")
    return int(sec) * 1000 + int(usec) // 1000


def test_a_gateway_killed_mid_stream(tmp_path, redis):
    words = " ".join(f"w{i}" for i in range(30))
    keys = [("streamer", "  limits: {maxParallel: 2}\n  budget: {maxSpend: 100, period: monthly}\n")]
    # Thirty words at ten a second: three-second streams.
    cfg = config(tmp_path / "config", redis.url, mock=f'{{response: "{words}", tokensPerSecond: 10}}', keys=keys)
    par = "swy:{k:default/streamer}:par"
    hold = f"swy:{{k:default/streamer}}:hold:{month()}"

    a = Gateway(cfg, env={"SWITCHYARD_LOG_FORMAT": "json"})
    streams = [open_stream(a, "streamer") for _ in range(2)]
    # Two slots and two reservations taken in Redis, nothing spent yet.
    assert redis.cmd("ZCARD", par) == 2 and redis.cmd("ZCARD", hold) == 2
    assert spend(redis, "streamer") == 0
    a.proc.kill()
    a.proc.wait(timeout=10)
    for r, client, lines in streams:
        with pytest.raises(httpx.HTTPError):
            for _ in lines:
                pass
        client.close()

    b = Gateway(cfg, env={"SWITCHYARD_LOG_FORMAT": "json"})
    try:
        # The dead gateway's slots are leases, still held: the key is at its maxParallel.
        r = httpx.post(b.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-streamer"},
                       json={"model": "chat", "messages": MSG}, timeout=30)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded", r.text
        # ... leases that lapse within 15 minutes of being taken (by Redis' clock).
        now = redis_now_ms(redis)
        members = redis.cmd("ZRANGE", par, 0, -1, "WITHSCORES") + redis.cmd("ZRANGE", hold, 0, -1, "WITHSCORES")
        expiries = [float(members[i + 1]) for i in range(0, len(members), 2)]
        assert len(expiries) == 4, members
        assert all(now < e <= now + LEASE_MS for e in expiries), [e - now for e in expiries]
        # Fifteen minutes later (the leases' expiry moved to the past, not waited for), the key
        # is free again: a new stream is admitted and runs to its end.
        for key in (par, hold):
            for m in redis.cmd("ZRANGE", key, 0, -1):
                redis.cmd("ZADD", key, "XX", now - 1, m)
        r, client, lines = open_stream(b, "streamer")
        rest = [line for line in lines if line.startswith("data: ")]
        client.close()
        assert rest[-1] == "data: [DONE]", rest[-3:]
        usage = json.loads(rest[-2][6:])["usage"]
        assert usage["completion_tokens"] == 30, usage
        # The dead leases are gone, and so is the finished stream's.
        wait_value(lambda: redis.cmd("ZCARD", par), lambda n: n == 0, "the slots freed")
        wait_value(lambda: redis.cmd("ZCARD", hold), lambda n: n == 0, "the reservations freed")
        # Spend: the stream that finished is charged; the two the dead gateway was serving are
        # not (docs/limits.md, "What a restart loses").
        cost = (usage["prompt_tokens"] + usage["completion_tokens"]) * 0.001
        wait_value(lambda: spend(redis, "streamer"), lambda v: abs(v - cost) < 1e-9, f"spend of {cost}")
        time.sleep(0.5)
        assert abs(spend(redis, "streamer") - cost) < 1e-9
    finally:
        b.stop()
        a.stop()
        print(b.output()[-3000:])


# Keeps Redis busy for 1.5 s (a script loops on TIME), as a stalled Redis would be: longer than
# the gateway's 500 ms wait, shorter than the harness' own 2 s.
BUSY = """local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
while true do
  t = redis.call('TIME')
  if t[1] * 1000000 + t[2] - start > 1500000 then return 1 end
end"""


def test_a_redis_call_that_times_out_is_not_applied_twice(tmp_path, redis):
    # Redis stalls while a request is admitted: the gateway gives up on Redis after 500 ms and
    # serves the request from local state (fail mode open), but Redis still runs the admission
    # once the stall is over, taking a slot and a reservation. The gateway gives them back by
    # name once Redis answers again (else the key would have one slot fewer for 15 minutes, and
    # a reservation against its budget), and the request's spend is written once.
    keys = [("k", "  limits: {maxParallel: 5}\n  budget: {maxSpend: 100, period: monthly}\n")]
    gw = Gateway(config(tmp_path / "config", redis.url, keys=keys))
    try:
        assert httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-k"},
                          json={"model": "chat", "messages": MSG}, timeout=30).status_code == 200
        busy = threading.Thread(target=redis.cmd, args=("EVAL", BUSY, 0), daemon=True)
        busy.start()
        time.sleep(0.2)
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-k"},
                       json={"model": "chat", "messages": MSG}, timeout=30)
        assert r.status_code == 200, r.text
        assert busy.is_alive(), "the request did not meet the stalled Redis"
        busy.join(timeout=5)
        # Both requests' spend reaches Redis, once each.
        wait_value(lambda: spend(redis, "k"), lambda v: v >= 2 * COST - 1e-9, "both requests' spend")
        time.sleep(1.0)
        assert abs(spend(redis, "k") - 2 * COST) < 1e-9, spend(redis, "k")
        # Nothing is held once no request is in flight.
        assert redis.cmd("ZCARD", "swy:{k:default/k}:par") == 0
        assert redis.cmd("ZCARD", f"swy:{{k:default/k}}:hold:{month()}") == 0
    finally:
        gw.stop()
        print(gw.output()[-3000:])
