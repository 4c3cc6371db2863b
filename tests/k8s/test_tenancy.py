"""Tenancy on a real API server: an LLMGateway that admits every namespace (`routes: {from: All}`)
gets only what other namespaces consented to by naming it in `parentRefs`. Its config Secrets hold
no other namespace's provider keys, it writes no status onto routes that did not name it, and its
own status says, by counts only, what it was not given."""

import base64
import json
import re
import uuid

import pytest

from operator_setup import start_operator


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    proc, port = start_operator(control_plane, tmp_path_factory.mktemp("op-tenancy"))
    yield proc
    proc.stop()
    print(proc.output()[-20000:])


def tenant(ns, secret, parents):
    """A Provider with a credential Secret and a route on it (with `parents` as parentRefs)."""
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{apiKey: {secret}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: openai, namespace: {ns}}}
spec:
  type: openai
  baseUrl: http://127.0.0.1:9/v1
  credentials: {{secretRef: {{name: creds}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMRoute
metadata: {{name: chat, namespace: {ns}}}
spec:
  model: chat-{ns}
  parentRefs: {parents}
  backends: [{{providerRef: {{name: openai}}, model: gpt-4o}}]
"""


def get(cp, kind, name, ns):
    return json.loads(cp.kubectl("get", kind, name, "-n", ns, "-o", "json", check=True).stdout)


def cond(obj, ctype):
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def shard_text(cp, ns, fleet):
    """Every config Secret of a fleet, decoded and concatenated."""
    items = json.loads(cp.kubectl("get", "secrets", "-n", ns, "-l", f"switchyard.dev/fleet={fleet}",
                                  "-o", "json", check=True).stdout)["items"]
    return "\n".join(base64.b64decode(v).decode(errors="replace")
                     for s in items for v in (s.get("data") or {}).values())


def test_a_fleet_admitting_all_namespaces_gets_only_what_it_was_granted(control_plane, operator, namespace):
    cp = control_plane
    tag = uuid.uuid4().hex[:8]
    victim_a, victim_b, granting = f"va-{tag}", f"vb-{tag}", f"ok-{tag}"
    hostile = namespace
    for ns in (victim_a, victim_b, granting):
        cp.kubectl("create", "namespace", ns, check=True)
    try:
        secret_a, secret_b, secret_ok = f"sk-victim-a-{tag}", f"sk-victim-b-{tag}", f"sk-granted-{tag}"
        # Victim A has its own fleet serving its route; victim B's route names no parent.
        cp.kubectl("apply", "-f", "-", check=True, input=tenant(victim_a, secret_a, "[]") + f"""---
apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: own, namespace: {victim_a}}}
spec: {{}}
""")
        cp.kubectl("apply", "-f", "-", check=True, input=tenant(victim_b, secret_b, "[]"))
        cp.wait_for("victim A's route served by its own fleet", lambda: (c := cond(get(cp, "llmroute", "chat", victim_a), "Accepted")) and c["status"] == "True", 60)
        before_a = get(cp, "llmroute", "chat", victim_a)["status"]
        assert [p["parentRef"] for p in before_a["parents"]] == [{"name": "own", "namespace": victim_a}]

        # The hostile fleet admits every namespace; one namespace grants it a route by name.
        cp.kubectl("apply", "-f", "-", check=True, input=tenant(granting, secret_ok, f"[{{name: grab, namespace: {hostile}}}]"))
        cp.kubectl("apply", "-f", "-", check=True, input=f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: grab, namespace: {hostile}}}
spec:
  routes: {{from: All}}
  keys: {{from: All}}
""")

        def refused():
            gw = get(cp, "llmgateway", "grab", hostile)
            c = cond(gw, "ResolvedRefs")
            if gw.get("status", {}).get("routes") == 1 and c and c["status"] == "False":
                return c
            return None
        c = cp.wait_for("hostile fleet compiled the granted route and says what it was refused", refused, 60)
        assert c["reason"] == "RefNotPermitted"
        m = re.match(r"(\d+) route\(s\) and (\d+) key\(s\) of other namespaces", c["message"])
        assert m, c["message"]
        # Other tests of the session may leave routes too; these two are at least counted.
        assert int(m.group(1)) >= 2, c["message"]
        # Counts only: no other namespace's object is named.
        for ns in (victim_a, victim_b, granting):
            assert ns not in c["message"], c["message"]

        # The config Secrets: the granted route's key is there (so the check below can fail),
        # the victims' keys are not.
        text = cp.wait_for("granted key in the hostile config", lambda: (t := shard_text(cp, hostile, "grab")) and secret_ok in t and t, 60)
        assert secret_a not in text and secret_b not in text
        assert f"chat-{victim_a}" not in text and f"chat-{victim_b}" not in text
        route_ok = get(cp, "llmroute", "chat", granting)["status"]
        assert {"name": "grab", "namespace": hostile} in [p["parentRef"] for p in route_ok["parents"]]

        # The victims' statuses: no parent entry of the hostile fleet, no condition it wrote.
        after_a = get(cp, "llmroute", "chat", victim_a)["status"]
        after_b = get(cp, "llmroute", "chat", victim_b).get("status", {})
        for st in (after_a, after_b):
            assert all(p["parentRef"].get("namespace") != hostile for p in st.get("parents", [])), st
            blob = json.dumps(st)
            assert f"LLMGateway {hostile}/grab" not in blob, st
        assert [p["parentRef"] for p in after_a["parents"]] == [{"name": "own", "namespace": victim_a}]
        assert cond({"status": after_a}, "Programmed")["status"] == cond({"status": before_a}, "Programmed")["status"]
        assert cond({"status": after_a}, "Programmed")["reason"] == cond({"status": before_a}, "Programmed")["reason"]
        for kind, ns in (("provider", victim_a), ("provider", victim_b)):
            assert f"LLMGateway {hostile}/grab" not in json.dumps(get(cp, kind, "openai", ns).get("status", {}))
    finally:
        for ns in (victim_a, victim_b, granting):
            cp.kubectl("delete", "namespace", ns, "--wait=false")
