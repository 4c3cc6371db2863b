"""Processes the Kubernetes suites start: helm, and the operator as a local process with the
chart's ServiceAccount and ClusterRole (its token, not admin)."""

import subprocess

from harness import REPO, Process, binary, free_port, wait_http

CHART = REPO / "charts" / "switchyard"
SYSTEM_NS = "switchyard-system"


def helm(cp, *args, check=True):
    r = subprocess.run([str(cp.bins / "helm"), "--kubeconfig", str(cp.kubeconfig), *args],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def operator_process(cp, tmp_path_factory, *args):
    """Applies the CRDs and the chart's RBAC, then starts `switchyard operator ARGS` with the
    chart ServiceAccount's token. The caller stops it."""
    cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), check=True)
    for crd in ["providers", "llmroutes", "virtualkeys", "llmgateways"]:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.switchyard.dev", "--timeout=60s", check=True)
    cp.kubectl("create", "namespace", SYSTEM_NS)
    rendered = helm(cp, "template", "sy", str(CHART), "--namespace", SYSTEM_NS,
                    "--show-only", "templates/serviceaccount.yaml",
                    "--show-only", "templates/clusterrole.yaml",
                    "--show-only", "templates/clusterrolebinding.yaml").stdout
    cp.kubectl("apply", "-n", SYSTEM_NS, "-f", "-", input=rendered, check=True)
    token = cp.kubectl("create", "token", "sy-switchyard", "-n", SYSTEM_NS, "--duration=2h", check=True).stdout.strip()
    kubeconfig = cp.token_kubeconfig(token, tmp_path_factory.mktemp("op") / "kubeconfig", user="operator",
                                     namespace=SYSTEM_NS)
    port = free_port()
    proc = Process([binary(), "operator", "--metrics-addr", f"127.0.0.1:{port}",
                    "--lease-namespace", SYSTEM_NS, "--gateway-image", "switchyard:test", *args],
                   env={"KUBECONFIG": str(kubeconfig), "SWITCHYARD_LOG": "info,switchyard_operator=debug"})
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.proc)
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return proc
