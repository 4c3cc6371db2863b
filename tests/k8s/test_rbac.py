"""Who can read what, on a real API server: a fleet's ServiceAccount reads its own config shards
(by name) and no other Secret of its namespace, and its gateway still loads and follows its
configuration, also when the configuration grows to more shards and shrinks back."""

import json

import openai
import pytest

from harness import Process, binary, free_port, wait_http
from operator_setup import SYSTEM_NS, start_operator
from test_operator_e2e import quickstart_in, wait_quickstart_published


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    proc, port = start_operator(control_plane, tmp_path_factory.mktemp("op"))
    yield proc
    proc.stop()
    print(proc.output()[-20000:])


def fleet_kubeconfig(cp, namespace, path):
    """A kubeconfig with a token of the quickstart fleet's ServiceAccount (what its pods get)."""
    cp.wait_for("fleet serviceaccount", lambda: cp.kubectl("get", "sa", "demo-gateway", "-n", namespace).returncode == 0, 60)
    token = cp.kubectl("create", "token", "demo-gateway", "-n", namespace, check=True).stdout.strip()
    return cp.token_kubeconfig(token, path, user="gateway", namespace=namespace)


def role_names(cp, namespace):
    role = json.loads(cp.kubectl("get", "role", "demo-gateway", "-n", namespace, "-o", "json", check=True).stdout)
    return [r.get("resourceNames") for r in role["rules"] if "secrets" in r["resources"]][0]


def test_a_fleet_reads_its_shards_and_no_other_secret(control_plane, operator, namespace, tmp_path):
    cp = control_plane
    cp.kubectl("apply", "-f", "-", input=quickstart_in(namespace), check=True)
    # Another fleet's credentials in the same namespace.
    cp.kubectl("create", "secret", "generic", "other-fleet-provider", "-n", namespace,
               "--from-literal=apiKey=sk-other", check=True)
    wait_quickstart_published(cp, namespace)
    kubeconfig = fleet_kubeconfig(cp, namespace, tmp_path / "gw-kubeconfig")

    def as_fleet(*args):
        return cp.kubectl(*args, "-n", namespace, kubeconfig=kubeconfig)

    for name in ["other-fleet-provider", "demo-key"]:  # the quickstart key's raw value is in demo-key
        r = as_fleet("get", "secret", name)
        assert r.returncode != 0 and "Forbidden" in r.stderr, (name, r.stdout, r.stderr)
    r = as_fleet("get", "secrets")
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr
    r = as_fleet("get", "secrets", "-l", "switchyard.dev/fleet=demo")
    assert r.returncode != 0 and "Forbidden" in r.stderr, "a label selector still lists the namespace"
    # Its own shards (the index and the one part of a small fleet): a get, and a list or watch
    # selecting one by name.
    assert role_names(cp, namespace) == ["demo-config-0", "demo-config-1"]
    assert as_fleet("get", "secret", "demo-config-0").returncode == 0
    r = as_fleet("get", "secrets", "--field-selector", "metadata.name=demo-config-0", "-o", "name")
    assert r.returncode == 0 and r.stdout.strip() == "secret/demo-config-0", r.stderr
    r = as_fleet("get", "secrets", "--field-selector", "metadata.name=other-fleet-provider")
    assert r.returncode != 0 and "Forbidden" in r.stderr


def test_the_gateway_follows_its_config_across_shard_counts(control_plane, operator, namespace, tmp_path):
    """A key with a label of 700 KB makes the configuration a dozen parts: the operator names the
    new shards in the Role before writing them, the gateway watches them once the index (shard 0)
    announces them and serves the new key; deleting the key shrinks the fleet back to one part."""
    cp = control_plane
    cp.kubectl("apply", "-f", "-", input=quickstart_in(namespace), check=True)
    wait_quickstart_published(cp, namespace)
    kubeconfig = fleet_kubeconfig(cp, namespace, tmp_path / "gw-kubeconfig")
    port = free_port()
    gw = Process([binary(), "gateway", "--kubernetes", "--fleet", "demo", "--namespace", namespace,
                  "--listen", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"], env={"KUBECONFIG": str(kubeconfig)})
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=gw.proc)
        url = f"http://127.0.0.1:{port}/v1"
        demo = openai.OpenAI(base_url=url, api_key="sk-switchyard-demo", max_retries=0)
        big = openai.OpenAI(base_url=url, api_key="sk-switchyard-big", max_retries=0)
        ask = [{"role": "user", "content": "hi"}]
        assert demo.chat.completions.create(model="demo-chat", messages=ask).choices

        def big_key_served():
            try:
                return bool(big.chat.completions.create(model="demo-chat", messages=ask).choices)
            except openai.AuthenticationError:
                return False

        assert not big_key_served()
        # `create`, not `apply`: the last-applied annotation would not hold the label.
        cp.kubectl("create", "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big-key", "namespace": namespace},
             "stringData": {"key": "sk-switchyard-big"}},
            {"apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
             "metadata": {"name": "big", "namespace": namespace},
             "spec": {"secretRef": {"name": "big-key"}, "labels": {"blob": "x" * 700_000}}},
        ]}))
        cp.wait_for("the big key served", big_key_served, 60)
        names = role_names(cp, namespace)
        assert len(names) > 2 and names == [f"demo-config-{i}" for i in range(len(names))], names
        for name in names:
            assert cp.kubectl("get", "secret", name, "-n", namespace).returncode == 0, name
        assert "watching config shard" not in gw.output(), "a shard watch was refused or failed"

        cp.kubectl("delete", "virtualkey", "big", "-n", namespace, check=True)
        cp.wait_for("the big key refused", lambda: not big_key_served(), 60)
        cp.wait_for("one part again", lambda: role_names(cp, namespace) == ["demo-config-0", "demo-config-1"], 30)
        assert cp.kubectl("get", "secret", "demo-config-2", "-n", namespace).returncode != 0
        assert demo.chat.completions.create(model="demo-chat", messages=ask).choices
    finally:
        gw.stop()
        print(gw.output()[-5000:])


def test_the_operator_cannot_write_what_it_does_not_manage(control_plane, operator, namespace, tmp_path):
    """The chart's ValidatingAdmissionPolicy: with the operator's own token, writes to a Secret and
    a Pod it does not manage are refused, in its fleets' namespaces and in kube-system alike."""
    cp = control_plane
    token = cp.kubectl("create", "token", "sy-switchyard", "-n", SYSTEM_NS, check=True).stdout.strip()
    kubeconfig = cp.token_kubeconfig(token, tmp_path / "op-kubeconfig", user="operator", namespace=SYSTEM_NS)
    for ns in ["kube-system", namespace]:
        cp.kubectl("create", "secret", "generic", "unrelated", "-n", ns, "--from-literal=k=v", check=True)
        cp.kubectl("apply", "-f", "-", check=True, input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unrelated", "namespace": ns},
            "spec": {"automountServiceAccountToken": False, "containers": [{"name": "c", "image": "busybox"}]}}))
        for args in [
            ("delete", "secret", "unrelated", "--dry-run=server"),
            ("patch", "secret", "unrelated", "-p", '{"data":{"k":"eA=="}}'),
            # Adding the managed-by label to someone else's object is refused as well.
            ("label", "secret", "unrelated", "app.kubernetes.io/managed-by=switchyard-operator"),
            ("annotate", "pod", "unrelated", "x=y"),
        ]:
            r = cp.kubectl(*args, "-n", ns, kubeconfig=kubeconfig)
            assert r.returncode != 0 and "switchyard operator may only write" in r.stderr, (ns, args, r.stderr)
        # Its own objects it still writes (a fleet's shards are the e2e tests'; here a plain create).
        r = cp.kubectl("create", "-n", ns, "-f", "-", kubeconfig=kubeconfig, input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {
                "name": "managed", "labels": {"app.kubernetes.io/managed-by": "switchyard-operator"}}}))
        assert r.returncode == 0, r.stderr
        cp.kubectl("delete", "secret", "managed", "-n", ns, kubeconfig=kubeconfig, check=True)
        cp.kubectl("delete", "secret,pod", "unrelated", "-n", ns, "--wait=false")
