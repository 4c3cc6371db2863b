"""A real, throwaway Kubernetes control plane for tests (stdlib only).

Starts etcd, kube-apiserver and (optionally) kube-controller-manager on random
loopback ports, with certificates made by the ``openssl`` CLI, and tears it all
down on exit. Modelled on controller-runtime's envtest.

    from controlplane import ControlPlane

    with ControlPlane(controller_manager=True) as cp:
        cp.kubectl("get", "ns", check=True)
        env = cp.env()          # KUBECONFIG=<admin kubeconfig>, for kube::Client::try_default()

Binaries come from ``tests/k8s/build.sh`` (built and cached on first use), or
from ``$SWITCHYARD_K8S_BIN_DIR`` when set. Logs are kept (and their directory
printed) when the with-block raised, or always with ``SWITCHYARD_K8S_KEEP=1``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


class ControlPlaneError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[controlplane] {msg}", file=sys.stderr, flush=True)


def bin_dir(build: bool = True) -> Path:
    """Directory holding the control-plane binaries; runs build.sh if any is missing."""
    override = os.environ.get("SWITCHYARD_K8S_BIN_DIR")
    if override:
        d = Path(override)
    else:
        out = subprocess.run(
            ["bash", str(BUILD_SH), "--print-bin-dir"], check=True, capture_output=True, text=True
        )
        d = Path(out.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (d / b).is_file()]
    if missing and build and not override:
        _log(f"binaries missing ({', '.join(missing)}): running {BUILD_SH} (a cold build takes 10-25+ min)")
        # build.sh logs to stderr (shown live); its last stdout line is the bin dir.
        out = subprocess.run(["bash", str(BUILD_SH)], stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise ControlPlaneError(f"{BUILD_SH} failed with exit code {out.returncode}")
        d = Path(out.stdout.strip().splitlines()[-1])
        missing = [b for b in BINARIES if not (d / b).is_file()]
    if missing:
        raise ControlPlaneError(f"missing control-plane binaries in {d}: {', '.join(missing)}")
    return d


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def _kubeconfig_yaml(server: str, ca_pem: bytes, user: str, token: str, namespace: str = "default") -> str:
    ca_b64 = base64.b64encode(ca_pem).decode()
    return f"""apiVersion: v1
kind: Config
clusters:
- name: switchyard-test
  cluster:
    server: {server}
    certificate-authority-data: {ca_b64}
users:
- name: {user}
  user:
    token: {json.dumps(token)}
contexts:
- name: {user}@switchyard-test
  context:
    cluster: switchyard-test
    user: {user}
    namespace: {namespace}
current-context: {user}@switchyard-test
"""


class _Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        self._log.close()


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on random loopback ports.

    Attributes once started: ``server`` (https URL), ``kubeconfig`` (admin, Path),
    ``admin_token``, ``user_name``/``user_token`` (a non-admin user with no RBAC
    grants), ``ca_path``, ``dir`` (temp root) and ``log_dir``.
    """

    ADMIN_USER = "switchyard-admin"
    USER_NAME = "switchyard-user"

    def __init__(
        self,
        controller_manager: bool = True,
        *,
        bins: Path | str | None = None,
        build: bool = True,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        keep_logs: bool | None = None,
    ):
        self.controller_manager = controller_manager
        self._bins = Path(bins) if bins else None
        self._build = build
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self.keep_logs = keep_logs if keep_logs is not None else os.environ.get("SWITCHYARD_K8S_KEEP") == "1"
        self._procs: list[_Proc] = []
        self.dir: Path | None = None
        self.log_dir: Path | None = None
        self.server = ""
        self.kubeconfig: Path | None = None
        self.ca_path: Path | None = None
        self.admin_token = secrets.token_hex(16)
        self.user_name = self.USER_NAME
        self.user_token = secrets.token_hex(16)
        self._kcm_token = secrets.token_hex(16)
        self.etcd_url = ""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(keep_logs=self.keep_logs or exc_type is not None)

    def start(self) -> "ControlPlane":
        t0 = time.monotonic()
        self.bins = self._bins or bin_dir(build=self._build)
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-k8s-"))
        self.log_dir = self.dir / "logs"
        self.log_dir.mkdir()
        try:
            self._make_pki()
            self._start_with_retry(self._start_etcd)
            self._start_with_retry(self._start_apiserver)
            self._write_kubeconfigs()
            if self.controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop(keep_logs=True)
            raise
        _log(f"control plane up in {time.monotonic() - t0:.1f}s at {self.server} (dir {self.dir})")
        return self

    def stop(self, keep_logs: bool = False) -> None:
        for p in reversed(self._procs):
            p.stop()
        self._procs.clear()
        if self.dir is None or not self.dir.exists():
            return
        if keep_logs:
            for child in self.dir.iterdir():
                if child != self.log_dir:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            _log(f"logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def kubectl(self, *args: str, check: bool = False, input: str | None = None,
                kubeconfig: Path | str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [str(self.bins / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
            )
        return r

    def token_kubeconfig(self, token: str, path: Path | str, user: str = "token-user",
                         namespace: str = "default") -> Path:
        """Write a kubeconfig that authenticates to this server with a bearer token."""
        path = Path(path)
        path.write_text(_kubeconfig_yaml(self.server, self.ca_path.read_bytes(), user, token, namespace))
        path.chmod(0o600)
        return path

    def env(self, base: dict | None = None) -> dict:
        """Environment with KUBECONFIG pointing at the admin kubeconfig and the binaries on PATH."""
        e = dict(os.environ if base is None else base)
        e["KUBECONFIG"] = str(self.kubeconfig)
        e["PATH"] = f"{self.bins}{os.pathsep}{e.get('PATH', '')}"
        return e

    def wait_for(self, what: str, fn, timeout: float = 60.0, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    # ------------------------------------------------------------------ internals
    def _make_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        # CA
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "3650", "-subj", "/CN=switchyard-test-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)
        # Serving certificate signed by the CA, IP:127.0.0.1 in its SANs.
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
                 "-subj", "/CN=kube-apiserver", cwd=pki)
        (pki / "apiserver.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1\n"
        )
        _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "3650", "-sha256", "-extfile", "apiserver.ext", "-out", "apiserver.crt", cwd=pki)
        # Service-account signing key pair.
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        # Static tokens: token,user,uid,"group1,group2"
        (pki / "tokens.csv").write_text(
            f'{self.admin_token},{self.ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.user_token},{self.USER_NAME},uid-user\n"
            f'{self._kcm_token},system:kube-controller-manager,uid-kcm,"system:masters"\n'
        )
        for f in pki.iterdir():
            f.chmod(0o600)
        self.ca_path = pki / "ca.crt"
        self.pki = pki

    def _start_with_retry(self, fn, attempts: int = 3) -> None:
        # Free ports are picked then released, so another process may grab one first.
        for i in range(attempts):
            try:
                fn()
                return
            except ControlPlaneError as e:
                if i == attempts - 1 or "address already in use" not in str(e):
                    raise
                _log(f"{fn.__name__} failed (attempt {i + 1}), retrying on new ports")
                if self._procs:
                    self._procs.pop().stop()

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        p = _Proc(name, argv, self.log_dir / f"{name}.log")
        self._procs.append(p)
        return p

    def _wait_http(self, proc: _Proc, url: str, what: str, ctx: ssl.SSLContext | None = None,
                   headers: dict | None = None, ok=lambda status, body: status == 200) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(f"{proc.name} exited with {proc.popen.returncode}; log tail:\n{proc.tail()}")
            try:
                req = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                    body = r.read().decode(errors="replace")
                    if ok(r.status, body):
                        return
                    last = f"{r.status} {body[:300]}"
            except urllib.error.HTTPError as e:
                last = f"{e.code} {e.read().decode(errors='replace')[:500]}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.25)
        raise ControlPlaneError(f"{what} not ready after {self.startup_timeout}s (last: {last}); "
                                f"log tail:\n{proc.tail()}")

    def _start_etcd(self) -> None:
        data = self.dir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        p = self._spawn("etcd", [
            str(self.bins / "etcd"),
            "--name=switchyard-test",
            f"--data-dir={data}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=switchyard-test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])
        self._wait_http(p, f"{self.etcd_url}/health", "etcd",
                        ok=lambda s, b: s == 200 and '"health":"true"' in b.replace(" ", ""))

    def stop_apiserver(self) -> None:
        """Stops kube-apiserver (SIGTERM, as a control-plane upgrade does); etcd and the rest
        keep running. `start_apiserver` brings it back on the same address."""
        for p in [p for p in self._procs if p.name == "kube-apiserver"]:
            p.stop()
            self._procs.remove(p)

    def start_apiserver(self) -> None:
        """Starts kube-apiserver again on the address it had; returns once it is ready."""
        self._start_apiserver(port=int(self.server.rsplit(":", 1)[1]))

    def _start_apiserver(self, port: int | None = None) -> None:
        port = port or free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki = self.pki
        args = [
            str(self.bins / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            # The lease reconciler would try to publish 127.0.0.1 as the "kubernetes" Service's
            # endpoint every 10s and log an error (loopback addresses are invalid endpoints).
            "--endpoint-reconciler-type=none",
        ]
        if not self.controller_manager:
            # No token controller to mint the "default" ServiceAccount that admission would require.
            args.append("--disable-admission-plugins=ServiceAccount")
        args += self.extra_apiserver_args
        p = self._spawn("kube-apiserver", args)
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        self._wait_http(p, f"{self.server}/readyz", "kube-apiserver /readyz", ctx=ctx, headers=auth)
        for ns in ("default", "kube-system"):  # made by the apiserver's system-namespaces controller
            self._wait_http(p, f"{self.server}/api/v1/namespaces/{ns}", f"namespace {ns}", ctx=ctx, headers=auth)

    def _write_kubeconfigs(self) -> None:
        ca = self.ca_path.read_bytes()
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.kubeconfig.write_text(_kubeconfig_yaml(self.server, ca, "admin", self.admin_token))
        self.kubeconfig.chmod(0o600)
        self.user_kubeconfig = self.token_kubeconfig(self.user_token, self.dir / "user.kubeconfig",
                                                     user=self.USER_NAME)
        self._kcm_kubeconfig = self.dir / "kcm.kubeconfig"
        self._kcm_kubeconfig.write_text(
            _kubeconfig_yaml(self.server, ca, "system:kube-controller-manager", self._kcm_token))

    def _start_controller_manager(self) -> None:
        pki = self.pki
        p = self._spawn("kube-controller-manager", [
            str(self.bins / "kube-controller-manager"),
            f"--kubeconfig={self._kcm_kubeconfig}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",  # no HTTPS endpoint: readiness is judged from the API below
            *self.extra_controller_manager_args,
        ])

        # Ready once the serviceaccount controller has made the "default" ServiceAccount.
        def ready():
            if not p.alive():
                raise ControlPlaneError(f"kube-controller-manager exited with {p.popen.returncode}; "
                                        f"log tail:\n{p.tail()}")
            return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0

        self.wait_for("kube-controller-manager (default ServiceAccount)", ready, timeout=self.startup_timeout)
