"""Shared helpers for the end-to-end suites: find the built binary, free ports, and processes
that are stopped (and whose logs are shown) when a test ends."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def binary() -> str:
    """The `switchyard` binary under test: $SWITCHYARD_BIN, else the cargo debug build."""
    if os.environ.get("SWITCHYARD_BIN"):
        return os.environ["SWITCHYARD_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    path = Path(target) / "debug" / "switchyard"
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "switchyard"], cwd=REPO, check=True)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Process:
    """A background process with its output in a temp file."""

    def __init__(self, args, env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="switchyard-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Gateway(Process):
    """`switchyard gateway --config DIR` on a free port, with its metrics on another
    (`metrics_url`; the client port answers 404 to /metrics)."""

    def __init__(self, config_dir, env=None, grace_period=30):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        super().__init__(
            [binary(), "gateway", "--config", str(config_dir), "--listen", f"127.0.0.1:{self.port}",
             "--metrics-addr", f"127.0.0.1:{self.metrics_port}", "--grace-period", str(grace_period)],
            env=env,
        )
        try:
            wait_http(self.url + "/readyz", proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + self.output())


def copy_example(name: str, dest: Path) -> Path:
    """A writable copy of an example folder."""
    target = dest / name
    shutil.copytree(REPO / "examples" / name, target)
    return target


class MockProvider(Process):
    """`switchyard mock-provider` on a free port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([binary(), "mock-provider", "--listen", f"127.0.0.1:{self.port}"])
        try:
            wait_http(self.url + "/healthz", proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("mock provider did not start:\n" + self.output())

    def stats(self) -> dict:
        import json

        with urllib.request.urlopen(self.url + "/mock/stats") as r:
            return json.loads(r.read())


def require(program: str, package: str) -> str:
    """The path of `program`; fails the test (never skips it) when it is not installed: a test
    that needs it is part of the suite, and scripts/test.sh installs it."""
    path = shutil.which(program)
    if path is None:
        import pytest

        pytest.fail(f"{program} is required by this test but is not on PATH; install it "
                    f"(Debian package {package}; scripts/test.sh does)", pytrace=False)
    return path


class RedisServer:
    """`redis-server` on a free port; data in an append-only file, so a restart keeps it.
    Fails the test when redis-server is not installed."""

    def __init__(self, tmp_path):
        self.binary = require("redis-server", "redis-server")
        self.port = free_port()
        self.dir = tmp_path / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/"

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.cmd("PING") == "PONG":
                    return
            except OSError:
                pass
            except RuntimeError as e:  # LOADING: a restart reading its append-only file
                if "LOADING" not in str(e):
                    raise
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cmd(self, *args):
        """One command over RESP, without a client library."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            parts = [str(a).encode() for a in args]
            s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
            return _read_reply(s.makefile("rb"))


def _read_reply(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")
