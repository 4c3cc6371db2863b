"""Shared set-up of the operator tests: CRDs, the chart's RBAC, and the operator as a local process
with the chart's ServiceAccount (not admin)."""

import http.client
import json
import re
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request

from harness import REPO, Process, binary, free_port, wait_http

CHART = REPO / "charts" / "switchyard"
SYSTEM_NS = "switchyard-system"


def helm(cp, *args, check=True):
    r = subprocess.run([str(cp.bins / "helm"), "--kubeconfig", str(cp.kubeconfig), *args],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def install_crds_and_rbac(cp):
    """Applies the CRDs and the chart's operator RBAC and admission policy (idempotent)."""
    cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), check=True)
    for crd in ["providers", "llmroutes", "virtualkeys", "budgets", "llmgateways"]:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.switchyard.dev", "--timeout=60s", check=True)
    cp.kubectl("create", "namespace", SYSTEM_NS)
    rendered = helm(cp, "template", "sy", str(CHART), "--namespace", SYSTEM_NS,
                    "--show-only", "templates/serviceaccount.yaml",
                    "--show-only", "templates/clusterrole.yaml",
                    "--show-only", "templates/clusterrolebinding.yaml",
                    "--show-only", "templates/validatingadmissionpolicy.yaml").stdout
    cp.kubectl("apply", "-n", SYSTEM_NS, "-f", "-", input=rendered, check=True)


def start_operator(cp, workdir, log_filter="info,switchyard_operator=debug", args=(), env=None,
                   service_account="sy-switchyard"):
    """The operator (`switchyard operator ... ARGS`) as a local process with the token of
    `service_account` (by default the chart's); returns `(process, metrics_port)` once it
    answers /healthz."""
    install_crds_and_rbac(cp)
    token = cp.kubectl("create", "token", service_account, "-n", SYSTEM_NS, "--duration=2h", check=True).stdout.strip()
    kubeconfig = cp.token_kubeconfig(token, workdir / "kubeconfig", user="operator", namespace=SYSTEM_NS)
    port = free_port()
    proc = Process([binary(), "operator", "--metrics-addr", f"127.0.0.1:{port}",
                    "--lease-namespace", SYSTEM_NS, "--gateway-image", "switchyard:test", *args],
                   env={"KUBECONFIG": str(kubeconfig), "SWITCHYARD_LOG": log_filter, **(env or {})})
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.proc)
    return proc, port


class Api:
    """A minimal admin client for the API server (one keep-alive connection per thread)."""

    def __init__(self, cp):
        u = urllib.parse.urlparse(cp.server)
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=str(cp.ca_path))
        self.auth = f"Bearer {cp.admin_token}"
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        return c

    def request(self, method, path, body=None, content_type="application/json", accept="application/json"):
        headers = {"Authorization": self.auth, "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in range(3):
            try:
                c = self._conn()
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                payload = r.read()
                return r.status, payload
            except (http.client.HTTPException, OSError):
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def apply(self, path, obj):
        """Server-side apply of one object (path without query)."""
        status, payload = self.request("PATCH", f"{path}?fieldManager=switchyard-tests&force=true", obj,
                                       content_type="application/apply-patch+yaml")
        assert status in (200, 201), f"{path}: {status} {payload[:500]!r}"

    def get(self, path, accept="application/json"):
        status, payload = self.request("GET", path, accept=accept)
        assert status == 200, f"{path}: {status} {payload[:500]!r}"
        return json.loads(payload)


def metric_values(port, name):
    """`{controller: value}` of the operator metric `name`, from its /metrics on `port`, summed
    over any other labels (the errors counter also has `reason`)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(rf'^{name}{{([^}}]*)}} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if "controller" in labels:
            out[labels["controller"]] = out.get(labels["controller"], 0.0) + float(m.group(2))
    return out
