"""Two operator replicas with leader election on a real API server: exactly one holds the
Lease and reconciles; when it stops, the other takes over and reconciles what changed."""

import json
import re
import urllib.request

from operator_setup import SYSTEM_NS, start_operator


def is_leader(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return any(line == "switchyard_operator_leader 1" for line in text.splitlines())


def ready(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
    except OSError:
        return False


def fleet(ns, route_model):
    return f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: ha, namespace: {ns}}}
spec: {{replicas: 1}}
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
  model: {route_model}
  backends: [{{providerRef: {{name: mock}}, model: mock-model}}]
"""


def published_generations(log):
    """The generations in an operator log's "published config" lines (colours removed)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    return [int(m.group(1)) for line in plain.splitlines() if "published config" in line
            for m in [re.search(r"generation=(\d+)", line)] if m]


def config_generation(cp, ns):
    r = cp.kubectl("get", "llmgateway", "ha", "-n", ns, "-o", "json")
    return json.loads(r.stdout).get("status", {}).get("configGeneration") if r.returncode == 0 else None


def test_one_leader_reconciles_and_the_standby_takes_over(control_plane, namespace, tmp_path):
    cp = control_plane
    procs = {}
    for name in ("operator-a", "operator-b"):
        (tmp_path / name).mkdir()
        procs[name] = start_operator(cp, tmp_path / name, args=("--leader-elect",), env={"POD_NAME": name})
    port_a, port_b = procs["operator-a"][1], procs["operator-b"][1]
    try:
        cp.wait_for("a leader", lambda: is_leader(port_a) or is_leader(port_b), 30)
        leader = "operator-a" if is_leader(port_a) else "operator-b"
        standby = "operator-b" if leader == "operator-a" else "operator-a"
        # Exactly one leads, both are ready (the standby stands by), and the Lease names the leader.
        assert not is_leader(procs[standby][1])
        assert ready(port_a) and ready(port_b)
        lease = json.loads(cp.kubectl("get", "lease", "switchyard-operator", "-n", SYSTEM_NS, "-o", "json",
                                      check=True).stdout)
        assert lease["spec"]["holderIdentity"] == leader

        cp.kubectl("apply", "-f", "-", input=fleet(namespace, "first"), check=True)
        cp.wait_for("the leader publishes a config", lambda: config_generation(cp, namespace), 60)
        published = config_generation(cp, namespace)
        # Both replicas watch the same objects: when the leader has published, a standby that
        # (wrongly) reconciled would have too. Checked again below, from its log's generations.
        assert "published config" in procs[leader][0].output()
        assert "published config" not in procs[standby][0].output()

        # The leader goes away (SIGTERM: it gives the Lease back); the standby leads and reconciles.
        procs[leader][0].terminate()
        procs[leader][0].proc.wait(timeout=30)
        cp.wait_for("the standby leads", lambda: is_leader(procs[standby][1]), 30)
        cp.kubectl("apply", "-f", "-", input=fleet(namespace, "second"), check=True)
        cp.wait_for("the new leader publishes the change",
                    lambda: (config_generation(cp, namespace) or 0) > published, 60)
        # The standby published only as the leader, after the first leader's generation.
        generations = published_generations(procs[standby][0].output())
        assert generations and min(generations) > published, (generations, published)
        lease = json.loads(cp.kubectl("get", "lease", "switchyard-operator", "-n", SYSTEM_NS, "-o", "json",
                                      check=True).stdout)
        assert lease["spec"]["holderIdentity"] == standby
    finally:
        for proc, _ in procs.values():
            proc.stop()
            print(proc.output()[-5000:])
