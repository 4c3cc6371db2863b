"""Tests of the test control plane itself: a real etcd + kube-apiserver
(+ kube-controller-manager) built from source by build.sh.

Run: python3 -m pytest tests/k8s -v   (the first run builds the binaries: 10-25+ min)
"""

import json
import shutil
import subprocess
import time

import pytest

from controlplane import ControlPlane, ControlPlaneError

K8S_VERSION = "v1.36.3"

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.switchyard.dev
spec:
  group: test.switchyard.dev
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [minReplicas, maxReplicas]
            x-kubernetes-validations:
            - rule: "self.minReplicas <= self.maxReplicas"
              message: "minReplicas must not exceed maxReplicas"
            properties:
              minReplicas:
                type: integer
                minimum: 0
              maxReplicas:
                type: integer
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""

WIDGET = """
apiVersion: test.switchyard.dev/v1
kind: Widget
metadata:
  name: {name}
  namespace: {ns}
spec:
  minReplicas: {min}
  maxReplicas: {max}
"""


def wait_until(what, fn, timeout=60.0, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def test_control_plane_is_up(control_plane):
    cp = control_plane
    assert cp.server.startswith("https://127.0.0.1:")
    assert cp.kubectl("get", "--raw", "/readyz", check=True).stdout.strip() == "ok"
    v = json.loads(cp.kubectl("version", "-o", "json", check=True).stdout)
    assert v["serverVersion"]["gitVersion"] == K8S_VERSION
    assert v["clientVersion"]["gitVersion"] == K8S_VERSION
    # The CA file verifies the serving certificate (what rustls/kube-rs will do).
    out = subprocess.run(
        ["openssl", "s_client", "-connect", cp.server.removeprefix("https://"), "-CAfile", str(cp.ca_path),
         "-verify_return_error", "-verify_ip", "127.0.0.1"],
        input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr


def test_crd_cel_validation_rejects_invalid_object(control_plane, namespace):
    cp = control_plane
    cp.kubectl("apply", "-f", "-", input=CRD, check=True)
    cp.kubectl("wait", "--for=condition=Established", "crd/widgets.test.switchyard.dev", "--timeout=60s",
               check=True)

    def apply_valid():
        r = cp.kubectl("apply", "-f", "-", input=WIDGET.format(name="good", ns=namespace, min=1, max=3))
        return r.returncode == 0  # retried: discovery may lag the Established condition briefly

    wait_until("valid Widget accepted", apply_valid, timeout=30)
    got = json.loads(cp.kubectl("get", "widget", "good", "-n", namespace, "-o", "json", check=True).stdout)
    assert got["spec"] == {"minReplicas": 1, "maxReplicas": 3}

    bad = cp.kubectl("apply", "-f", "-", input=WIDGET.format(name="bad", ns=namespace, min=5, max=2))
    assert bad.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in bad.stderr, bad.stderr
    assert cp.kubectl("get", "widget", "bad", "-n", namespace).returncode != 0

    # An update that breaks the rule is refused too (server-side apply).
    upd = cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input=WIDGET.format(name="good", ns=namespace, min=9, max=3))
    assert upd.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in upd.stderr, upd.stderr


def test_garbage_collection_of_owned_configmap(control_plane, namespace):
    cp = control_plane
    cp.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b", check=True)
    uid = cp.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}",
                     check=True).stdout.strip()
    assert uid
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "data": {"x": "y"},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(child), check=True)
    assert cp.kubectl("get", "configmap", "child", "-n", namespace).returncode == 0

    cp.kubectl("delete", "configmap", "owner", "-n", namespace, check=True)

    def child_gone():
        r = cp.kubectl("get", "configmap", "child", "-n", namespace)
        return r.returncode != 0 and "NotFound" in r.stderr

    wait_until("garbage collection of the owned ConfigMap", child_gone, timeout=90)


def test_service_account_token_and_rbac(control_plane, namespace, tmp_path):
    cp = control_plane
    cp.kubectl("create", "serviceaccount", "robot", "-n", namespace, check=True)
    token = cp.kubectl("create", "token", "robot", "-n", namespace, "--duration=10m", check=True).stdout.strip()
    assert token.count(".") == 2  # a JWT

    kc = cp.token_kubeconfig(token, tmp_path / "robot.kubeconfig", user="robot", namespace=namespace)
    who = json.loads(cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=kc, check=True).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"

    # RBAC is enforced: nothing is allowed until a Role grants it.
    denied = cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    cp.kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps",
               check=True)
    cp.kubectl("create", "rolebinding", "robot-cm-reader", "-n", namespace, "--role=cm-reader",
               f"--serviceaccount={namespace}:robot", check=True)
    wait_until("RoleBinding to take effect",
               lambda: cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc).returncode == 0, timeout=30)
    assert cp.kubectl("get", "secrets", "-n", namespace, kubeconfig=kc).returncode != 0


def test_static_non_admin_user_is_not_admin(control_plane, namespace):
    cp = control_plane
    who = json.loads(cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=cp.user_kubeconfig,
                                check=True).stdout)
    assert who["status"]["userInfo"]["username"] == cp.user_name
    r = cp.kubectl("auth", "can-i", "create", "configmaps", "-n", namespace, kubeconfig=cp.user_kubeconfig)
    assert r.stdout.strip() == "no"
    assert cp.kubectl("auth", "can-i", "create", "configmaps", "-n", namespace).stdout.strip() == "yes"


def test_helm_installs_a_chart(control_plane, namespace, tmp_path):
    cp = control_plane
    helm = str(cp.bins / "helm")
    chart = tmp_path / "mini"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mini\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    env = cp.env()
    env["HELM_CACHE_HOME"] = env["HELM_CONFIG_HOME"] = env["HELM_DATA_HOME"] = str(tmp_path / "helm")
    r = subprocess.run([helm, "install", "rel", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = cp.kubectl("get", "configmap", "rel-cm", "-n", namespace, "-o", "jsonpath={.data.greeting}",
                     check=True).stdout
    assert got == "hi"


def test_without_controller_manager_and_logs_kept_on_error():
    kept = None
    with pytest.raises(RuntimeError, match="boom"):
        with ControlPlane(controller_manager=False) as cp:
            kept = cp.log_dir
            # No controller manager: no "default" ServiceAccount, but the ServiceAccount admission
            # plugin is disabled, so pods can still be created; TokenRequest works without it.
            cp.kubectl("create", "namespace", "plain", check=True)
            assert cp.kubectl("get", "serviceaccount", "default", "-n", "plain").returncode != 0
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "plain"},
                   "spec": {"containers": [{"name": "c", "image": "example.invalid/none:1"}]}}
            cp.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
            cp.kubectl("create", "serviceaccount", "robot", "-n", "plain", check=True)
            assert cp.kubectl("create", "token", "robot", "-n", "plain", check=True).stdout.count(".") == 2
            procs = list(cp._procs)
            assert [p.name for p in procs] == ["etcd", "kube-apiserver"]
            raise RuntimeError("boom")
    try:
        assert kept is not None and (kept / "kube-apiserver.log").is_file() and (kept / "etcd.log").is_file()
        assert not (kept.parent / "pki").exists()  # everything but the logs is removed
        assert not any(p.alive() for p in procs)
    finally:
        if kept is not None:
            shutil.rmtree(kept.parent, ignore_errors=True)


def test_startup_failure_is_reported():
    cp = ControlPlane(controller_manager=False, startup_timeout=30, extra_apiserver_args=["--no-such-flag"])
    try:
        with pytest.raises(ControlPlaneError, match="kube-apiserver exited"):
            cp.start()
        assert "unknown flag: --no-such-flag" in (cp.log_dir / "kube-apiserver.log").read_text()
        assert not any(p.alive() for p in cp._procs)
    finally:
        shutil.rmtree(cp.dir, ignore_errors=True)
