"""Two operator replicas with leader election on a real API server: exactly one holds the
Lease and reconciles; when it stops, the other takes over and reconciles what changed."""

import datetime
import json
import os
import re
import signal
import time
import urllib.request

from controlplane import ControlPlane
from operator_setup import SYSTEM_NS, Api, install_crds_and_rbac, start_operator


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


# Fleets the frozen leader has edits of waiting when it resumes.
FLEETS = 6

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


def audited_writes(log_path, user):
    """(received, verb, resource, name) of every write `user` made, from the audit log."""
    out = []
    for line in log_path.read_text().splitlines():
        e = json.loads(line)
        if e.get("user", {}).get("username") == user:
            ref = e.get("objectRef", {})
            received = datetime.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
            out.append((received, e["verb"], ref.get("resource"), ref.get("name"), e.get("responseStatus", {}).get("code")))
    return out


def test_a_frozen_leader_writes_nothing_once_resumed(tmp_path):
    """Issue 16, defect 5. The leader is frozen (SIGSTOP) past the lease; the standby takes
    over and publishes edits made meanwhile; the old leader is resumed with edits of several
    fleets waiting on its watches. On the API server's audit log (each replica has its own
    ServiceAccount, so every write names its author), nothing it sends after it is resumed is a
    write. (The binary before the fix also passed this in two runs: on waking, its renewal's
    read of the Lease happened to end it before a reconcile wrote; nothing made that so. Now the
    write gate does. The clock test below is the one that fails on that binary.)"""
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = tmp_path / "audit.log"
    cp = ControlPlane(controller_manager=False, extra_apiserver_args=[
        f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}", "--audit-log-mode=blocking"])
    cp.start()
    procs = {}
    try:
        install_crds_and_rbac(cp)
        # A second ServiceAccount with the chart's ClusterRole: each replica's writes are its own.
        cp.kubectl("create", "serviceaccount", "sy-switchyard-b", "-n", SYSTEM_NS, check=True)
        cp.kubectl("create", "clusterrolebinding", "sy-switchyard-b", "--clusterrole=sy-switchyard",
                   f"--serviceaccount={SYSTEM_NS}:sy-switchyard-b", check=True)
        users = {"operator-a": f"system:serviceaccount:{SYSTEM_NS}:sy-switchyard",
                 "operator-b": f"system:serviceaccount:{SYSTEM_NS}:sy-switchyard-b"}
        for name, sa in [("operator-a", "sy-switchyard"), ("operator-b", "sy-switchyard-b")]:
            (tmp_path / name).mkdir()
            procs[name] = start_operator(cp, tmp_path / name, args=("--leader-elect",), env={"POD_NAME": name},
                                         service_account=sa)
        cp.wait_for("a leader", lambda: is_leader(procs["operator-a"][1]) or is_leader(procs["operator-b"][1]), 30)
        leader = "operator-a" if is_leader(procs["operator-a"][1]) else "operator-b"
        standby = "operator-b" if leader == "operator-a" else "operator-a"
        # Several fleets, so that the resumed leader has many reconciles waiting at once.
        spaces = [f"ha-{i}" for i in range(FLEETS)]
        for n in spaces:
            cp.kubectl("create", "namespace", n, check=True)
            cp.kubectl("apply", "-f", "-", input=fleet(n, "first"), check=True)
        for n in spaces:
            cp.wait_for(f"the leader publishes {n}", lambda: config_generation(cp, n), 60)
        first = {n: config_generation(cp, n) for n in spaces}

        frozen_at = time.monotonic()
        os.kill(procs[leader][0].proc.pid, signal.SIGSTOP)
        cp.wait_for("the standby leads", lambda: is_leader(procs[standby][1]), 60)
        took_over = time.monotonic() - frozen_at
        # Edits while the old leader is frozen: the new leader publishes them; the old one's
        # watches hold them for when it resumes.
        for n in spaces:
            cp.kubectl("apply", "-f", "-", input=fleet(n, "second"), check=True)
        for n in spaces:
            cp.wait_for(f"the new leader publishes {n}", lambda: (config_generation(cp, n) or 0) > first[n], 60)
        for n in spaces:
            cp.kubectl("apply", "-f", "-", input=fleet(n, "third"), check=True)
        time.sleep(1)
        resumed = datetime.datetime.now(datetime.timezone.utc)
        os.kill(procs[leader][0].proc.pid, signal.SIGCONT)
        # Long enough for anything it would do on waking: its renewal period, the reconciles of
        # what its watches held, a retry.
        time.sleep(15)

        old_writes = audited_writes(audit_log, users[leader])
        new_writes = audited_writes(audit_log, users[standby])
        # The audit log does attribute writes: the old leader's before its freeze, the new one's after.
        assert any(w[2] == "leases" for w in old_writes), old_writes[:5]
        assert any(w[2] == "secrets" for w in old_writes), "the old leader's publish is not in the audit log"
        assert any(w[2] == "leases" and w[0] > resumed for w in new_writes), "the new leader stopped renewing"
        after = [w for w in old_writes if w[0] >= resumed]
        print(f"standby took over {took_over:.1f} s after the freeze; old leader's writes after resuming: {after}")
        assert not after, after
        assert not still_leads(procs[leader]), "the old leader still says it leads"
        lease = json.loads(cp.kubectl("get", "lease", "switchyard-operator", "-n", SYSTEM_NS, "-o", "json",
                                      check=True).stdout)
        assert lease["spec"]["holderIdentity"] == standby
        # The frozen leader stopped writing at most 10 s (its renew deadline) after the freeze.
        assert took_over > 10, f"the standby took over {took_over:.1f} s after the freeze"
    finally:
        for proc, _ in procs.values():
            try:
                os.kill(proc.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            proc.stop()
            print(proc.output()[-5000:])
        cp.stop(keep_logs=False)


def still_leads(proc_port):
    proc, port = proc_port
    if proc.proc.poll() is not None:
        return False
    try:
        return is_leader(port)
    except OSError:
        return False


def micro_time(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_holder_whose_clock_lags_keeps_the_lease_while_it_renews(tmp_path):
    """Issue 16, defect 5: expiry must not compare the holder's renewTime with the local clock.
    A holder whose clock runs 60 s behind renews every 2 s (its renewTime always a minute old by
    our clock); a candidate must leave it the Lease while the record keeps changing, and take it
    only once the record has stayed the same for the lease duration, counted on its own clock.
    (The old code took it at once: two leaders.)"""
    with ControlPlane(controller_manager=False) as cp:
        install_crds_and_rbac(cp)
        api = Api(cp)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases/switchyard-operator"
        lag = datetime.timedelta(seconds=60)
        acquired = datetime.datetime.now(datetime.timezone.utc) - lag

        def renew():
            api.apply(path, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                             "metadata": {"name": "switchyard-operator", "namespace": SYSTEM_NS},
                             "spec": {"holderIdentity": "lagging-leader", "leaseDurationSeconds": 15,
                                      "acquireTime": micro_time(acquired),
                                      "renewTime": micro_time(datetime.datetime.now(datetime.timezone.utc) - lag)}})
        renew()
        proc, port = start_operator(cp, tmp_path, args=("--leader-elect",), env={"POD_NAME": "candidate"})
        try:
            until = time.monotonic() + 25
            while time.monotonic() < until:
                renew()
                assert not is_leader(port), "took the Lease from a holder that renews"
                time.sleep(2)
            lease = api.get(path)
            assert lease["spec"]["holderIdentity"] == "lagging-leader", lease["spec"]
            stopped = time.monotonic()
            cp.wait_for("the candidate takes the Lease once the holder stops", lambda: is_leader(port), 40)
            waited = time.monotonic() - stopped
            print(f"the candidate took the Lease {waited:.1f} s after the holder's last renewal")
            assert waited >= 14, f"took the Lease {waited:.1f} s after the holder's last renewal"
            assert api.get(path)["spec"]["holderIdentity"] == "candidate"
        finally:
            proc.stop()
            print(proc.output()[-3000:])
