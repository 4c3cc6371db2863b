"""One fleet's unreachable Redis must not wedge the others (issue 16, defect 4), on a real API
server: two fleets, one with a real `redis-server`, one whose Redis URL is a port nobody
listens on. The healthy fleet's spend still reaches VirtualKey status; a key of the healthy fleet
is deleted at once with its counters; a key of the broken fleet is deleted once the bounded
retry (`--key-cleanup-deadline`) runs out, with a Warning event saying what was left behind."""

import datetime
import json
import time

import pytest

from harness import RedisServer

from operator_setup import start_operator

FINALIZER = "switchyard.dev/shared-state-cleanup"
# Seconds the operator retries a deleted key's counters on an unreachable Redis.
DEADLINE = 15
# Port 1: connection refused. Its URL also sorts before any real port's, so a loop over the
# servers in URL order meets it first (as the old code did, stopping there).
DEAD_REDIS = "redis://127.0.0.1:1/"


@pytest.fixture(scope="module")
def isolating_operator(control_plane, tmp_path_factory):
    proc, port = start_operator(control_plane, tmp_path_factory.mktemp("op"),
                                args=("--spend-interval", "0.5", "--key-cleanup-deadline", str(DEADLINE)))
    yield proc
    proc.stop()
    print(proc.output()[-20000:])


def fleet(ns, name, redis_url, keys):
    docs = [f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  redis: {{url: "{redis_url}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: {ns}}}
spec: {{type: mock}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {ns}}}
spec:
  model: chat
  backends: [{{providerRef: {{name: mock}}, model: mock-model}}]
"""]
    for k in keys:
        docs.append(f"""apiVersion: switchyard.dev/v1alpha1
kind: VirtualKey
metadata: {{name: {k}, namespace: {ns}}}
spec:
  budget: {{maxSpend: 10, period: daily}}
""")
    return "---\n".join(docs)


def get(cp, kind, name, ns):
    r = cp.kubectl("get", kind, name, "-n", ns, "-o", "json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def has_finalizer(cp, name, ns):
    return FINALIZER in ((get(cp, "virtualkey", name, ns) or {}).get("metadata", {}).get("finalizers") or [])


def warnings(cp, ns, kind, name):
    items = json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json", check=True).stdout)["items"]
    return [e for e in items if e.get("type") == "Warning" and e.get("regarding", {}).get("kind") == kind
            and e.get("regarding", {}).get("name") == name]


def test_a_fleet_with_an_unreachable_redis_wedges_nobody(control_plane, isolating_operator, namespace, tmp_path):
    cp = control_plane
    healthy_ns, broken_ns = namespace, f"{namespace}-broken"
    cp.kubectl("create", "namespace", broken_ns, check=True)
    redis = RedisServer(tmp_path)
    try:
        cp.kubectl("apply", "-f", "-", check=True, input=fleet(broken_ns, "broken", DEAD_REDIS, ["victim"]))
        cp.kubectl("apply", "-f", "-", check=True, input=fleet(healthy_ns, "healthy", redis.url, ["spender", "leaver"]))
        for ns, k in [(broken_ns, "victim"), (healthy_ns, "spender"), (healthy_ns, "leaver")]:
            cp.wait_for(f"finalizer on {ns}/{k}", lambda: has_finalizer(cp, k, ns), 60)

        # The gateways' spend, as they write it, for the healthy fleet's keys.
        day = datetime.datetime.now(datetime.timezone.utc).strftime("d%Y-%m-%d")
        scope = lambda k: f"swy:{{k:{healthy_ns}/{k}}}"  # noqa: E731
        redis.cmd("SET", f"{scope('spender')}:spend:{day}", "0.42")
        redis.cmd("SET", f"{scope('leaver')}:spend:{day}", "0.5")
        redis.cmd("SET", f"{scope('leaver')}:last", str(int(time.time() * 1000)))

        # Spend reporting goes on for the healthy fleet while the broken one's Redis refuses.
        def spend():
            return ((get(cp, "virtualkey", "spender", healthy_ns) or {}).get("status", {}).get("spend") or {}).get("amount")
        cp.wait_for("the healthy fleet's spend in status", lambda: spend() == pytest.approx(0.42), 30)

        # A key of the healthy fleet is deleted at once, with its counters.
        started = time.monotonic()
        cp.kubectl("delete", "virtualkey", "leaver", "-n", healthy_ns, "--wait=true", "--timeout=60s", check=True)
        healthy_took = time.monotonic() - started
        assert redis.cmd("EXISTS", f"{scope('leaver')}:spend:{day}", f"{scope('leaver')}:last") == 0
        assert healthy_took < DEADLINE / 2, f"deleting a healthy fleet's key took {healthy_took:.1f} s"

        # A key of the broken fleet: retried, then let go within the deadline (plus one retry
        # interval, one Redis timeout and scheduling), with Warning events.
        started = time.monotonic()
        cp.kubectl("delete", "virtualkey", "victim", "-n", broken_ns, "--wait=false", check=True)
        assert get(cp, "virtualkey", "victim", broken_ns) is not None, "held by the finalizer at first"
        cp.wait_for("the broken fleet's key deleted", lambda: get(cp, "virtualkey", "victim", broken_ns) is None,
                    DEADLINE + 20)
        took = time.monotonic() - started
        print(f"healthy fleet's key deleted in {healthy_took:.1f} s; broken fleet's key in {took:.1f} s "
              f"(deadline {DEADLINE} s)")
        assert took >= DEADLINE - 2, f"let go after {took:.1f} s, before the {DEADLINE} s retry window"
        events = cp.wait_for("a Warning on the key", lambda: warnings(cp, broken_ns, "VirtualKey", "victim"), 10)
        assert events[0]["reason"] == "RedisCleanupAbandoned"
        note = events[0]["note"]
        assert f"{broken_ns}/broken" in note and "expire" in note and "total" in note, note
        assert "127.0.0.1:1" not in note, "the Redis URL (it may carry a password) is never told"
        fleet_events = warnings(cp, broken_ns, "LLMGateway", "broken")
        assert [e["reason"] for e in fleet_events] == ["RedisCleanupAbandoned"], fleet_events

        # And the healthy fleet's spend is still reported afterwards.
        redis.cmd("SET", f"{scope('spender')}:spend:{day}", "0.75")
        cp.wait_for("the healthy fleet's spend still follows", lambda: spend() == pytest.approx(0.75), 30)
    finally:
        cp.kubectl("delete", "namespace", broken_ns, "--wait=false")
        redis.stop()
