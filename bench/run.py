#!/usr/bin/env python3
"""Switchyard benchmark driver: one fast upstream (the mock provider), three ways to reach it
(directly, through Switchyard, through the LiteLLM proxy), compared in one interleaved run; and the
lean anchors (issue 18): nginx `proxy_pass` and a bare axum + reqwest proxy against Switchyard, all
in front of an nginx upstream with a fixed reply, driven by wrk.

Starts every process itself on 127.0.0.1, drives them with `switchyard bench` (our own load
generator: HDR histograms, open and closed loop, time to first byte), samples memory from /proc,
and writes bench/results/<date>.md, bench/results/latest.md and bench/results/latency.png.
Every loop is bounded; every process it starts is stopped by its pid at the end.

    bench/run.sh            # full run, about 13 minutes
    bench/run.sh --quick    # about 2 minutes, for a smoke check

Environment: SWITCHYARD_BIN (default: the `dist` build in $CARGO_TARGET_DIR), BARE_PROXY_BIN
(default: bench/bare-proxy's `dist` build in $CARGO_TARGET_DIR), NGINX_BIN (/usr/sbin/nginx), LITELLM_BIN
(default: ~/.cache/switchyard/litellm-venv/bin/litellm; the run goes on without it, noting it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
KEY = "sk-bench-key"
LIMITED_KEY = "sk-bench-limited"
UPSTREAM_KEY = "sk-upstream"
HOLD_MODEL = "mock-slow-5s"  # the mock sends headers at once, the first token after 5 s


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Proc:
    def __init__(self, name: str, args: list[str], logdir: Path, env: dict | None = None, cwd=None):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Our own process group (start_new_session): LiteLLM's workers go with it.
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


def proc_tree(pid: int) -> list[int]:
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except Exception:
                pass
    out = [pid]
    i = 0
    while i < len(out):
        out += [c for c, p in parents.items() if p == out[i] and c not in out]
        i += 1
    return out


def status_kib(pid: int, field: str) -> int:
    total = 0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except Exception:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in proc_tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
        except Exception:
            pass
    return total


def profile_guided(bin: str) -> bool:
    """Whether `bin` was built by bench/pgo.sh, which leaves the profile it used beside it."""
    return Path(bin + ".profdata").is_file()


def hot_order(bin: str) -> dict | None:
    """How many of the functions crates/switchyard/hot-symbols.txt names the binary has.

    The file names symbols with their hashes, which change with any dependency or feature change;
    a binary that lacks most of them is linked in the default order and keeps 6-7 MiB more of
    itself resident (bench/results/profiling.md, "Hot code together"). A profile-guided build
    (bench/pgo.sh: `--target`, so other hashes) is laid out by its profile instead, with the same
    RSS (profiling.md, "Profile-guided optimisation"). None when nm is missing."""
    listed = (REPO / "crates" / "switchyard" / "hot-symbols.txt").read_text().split()
    try:
        out = subprocess.run(["nm", "--defined-only", bin], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    defined = {parts[2] for parts in (l.split() for l in out.splitlines()) if len(parts) == 3}
    return {"listed": len(listed), "found": sum(1 for name in listed if name in defined),
            "profile_guided": profile_guided(bin)}


def machine_load() -> dict:
    load1, load5, load15 = os.getloadavg()
    busy = []
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:6]
        busy = [" ".join(l.split()) for l in out]
    except Exception:
        pass
    return {"load1": load1, "load5": load5, "load15": load15, "top": busy}


# ---------------------------------------------------------------- configs


def switchyard_config(dir: Path, upstream: int, http_version: str = "auto") -> None:
    """The realistic path; `http_version` is the OpenAI providers' `httpVersion` (`http2`: h2c
    to the mock upstream, which speaks it)."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "bench.yaml").write_text(textwrap.dedent(f"""\
        # Generated by bench/run.py: the realistic path. Two OpenAI-type providers on the same
        # mock upstream, one route balancing over both, a virtual key with a rate limit.
        apiVersion: switchyard.dev/v1alpha1
        kind: Provider
        metadata: {{name: up-a, namespace: default}}
        spec:
          type: openai
          baseUrl: http://127.0.0.1:{upstream}/v1
          credentials: {{secretRef: {{name: upstream-key, key: apiKey}}}}
          httpVersion: {http_version}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: Provider
        metadata: {{name: up-b, namespace: default}}
        spec:
          type: openai
          baseUrl: http://127.0.0.1:{upstream}/v1
          credentials: {{secretRef: {{name: upstream-key, key: apiKey}}}}
          httpVersion: {http_version}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: Provider
        metadata: {{name: claude, namespace: default}}
        spec:
          type: anthropic
          baseUrl: http://127.0.0.1:{upstream}
          credentials: {{secretRef: {{name: upstream-key, key: apiKey}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: upstream-key, namespace: default}}
        stringData: {{apiKey: {UPSTREAM_KEY}}}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: LLMRoute
        metadata: {{name: bench, namespace: default}}
        spec:
          model: bench
          backends:
          - {{providerRef: {{name: up-a}}, model: mock-gpt, weight: 1}}
          - {{providerRef: {{name: up-b}}, model: mock-gpt, weight: 1}}
        ---
        # A wildcard route: any `bench-wild/<model>` reaches both backends as `<model>`
        # (`MODEL=bench-wild/mock-gpt bench/profile.sh` profiles it).
        apiVersion: switchyard.dev/v1alpha1
        kind: LLMRoute
        metadata: {{name: bench-wild, namespace: default}}
        spec:
          model: "bench-wild/*"
          backends:
          - {{providerRef: {{name: up-a}}, model: "*", weight: 1}}
          - {{providerRef: {{name: up-b}}, model: "*", weight: 1}}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: LLMRoute
        metadata: {{name: bench-anthropic, namespace: default}}
        spec:
          model: bench-anthropic
          backends:
          - {{providerRef: {{name: claude}}, model: claude-mock}}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: LLMRoute
        metadata: {{name: bench-hold, namespace: default}}
        spec:
          model: bench-hold
          backends:
          - {{providerRef: {{name: up-a}}, model: {HOLD_MODEL}}}
          - {{providerRef: {{name: up-b}}, model: {HOLD_MODEL}}}
        ---
        apiVersion: switchyard.dev/v1alpha1
        kind: VirtualKey
        metadata: {{name: bench, namespace: default}}
        spec:
          secretRef: {{name: bench-key}}
          labels: {{team: bench}}
          limits: {{rpm: 100000000}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: bench-key, namespace: default}}
        stringData: {{key: {KEY}}}
        ---
        # Probes whether key limits are enforced: a second request within the minute must get 429.
        apiVersion: switchyard.dev/v1alpha1
        kind: VirtualKey
        metadata: {{name: limited, namespace: default}}
        spec:
          secretRef: {{name: limited-key}}
          limits: {{rpm: 1}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: limited-key, namespace: default}}
        stringData: {{key: {LIMITED_KEY}}}
        """))


def litellm_config(path: Path, upstream: int) -> None:
    # The same shape: two deployments of one model name on the same upstream (LiteLLM's router
    # balances them), an Anthropic deployment, a hold model, a per-deployment rpm limit, and
    # Prometheus metrics on.
    # LiteLLM's virtual keys need a Postgres database; the master key stands in for them.
    def dep(name, model, base):
        return textwrap.dedent(f"""\
          - model_name: {name}
            litellm_params:
              model: {model}
              api_base: {base}
              api_key: {UPSTREAM_KEY}
              rpm: 100000000
        """)
    openai_base = f"http://127.0.0.1:{upstream}/v1"
    path.write_text(
        "model_list:\n"
        + dep("bench", "openai/mock-gpt", openai_base)
        + dep("bench", "openai/mock-gpt", openai_base)
        + dep("bench-anthropic", "anthropic/claude-mock", f"http://127.0.0.1:{upstream}")
        + dep("bench-hold", f"openai/{HOLD_MODEL}", openai_base)
        + dep("bench-hold", f"openai/{HOLD_MODEL}", openai_base)
        + textwrap.dedent(f"""\
        router_settings:
          routing_strategy: simple-shuffle
        litellm_settings:
          num_retries: 0
          request_timeout: 60
          telemetry: false
          callbacks: ["prometheus"]
        general_settings:
          master_key: {KEY}
        """)
    )


# ---------------------------------------------------------------- the load tool


class Bench:
    def __init__(self, bin: str):
        self.bin = bin

    def run(self, *args: str, timeout: float = 300) -> dict:
        r = subprocess.run([self.bin, "bench", *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"switchyard bench {' '.join(args)}: {r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def load(self, url, model, *, api="openai", stream=False, concurrency=16, rate=None,
             duration=4.0, warmup=1.0, headers=()) -> dict:
        args = ["load", "--url", url, "--key", KEY, "--model", model, "--api", api,
                "-c", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
        if stream:
            args.append("--stream")
        if rate:
            args += ["--rate", str(rate)]
        for h in headers:
            args += ["-H", h]
        return self.run(*args, timeout=duration + warmup + 120)


# ---------------------------------------------------------------- lean anchors (issue 18)

# A fresh gateway whose providers speak h2c to the mock (the streams section only).
H2C = "switchyard (fresh, h2c upstream)"

# The fixed reply of the anchors' upstream: nginx answering every request with one OpenAI chat
# completion (usage included, so Switchyard counts tokens as it would on a real reply).
FIXED_REPLY = ('{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"mock-gpt",'
               '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fixed upstream."},'
               '"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}')
ANCHORS = ("nginx", "bare", "switchyard")
ANCHOR_TITLES = {"nginx": "nginx proxy_pass", "bare": "bare axum+reqwest proxy", "switchyard": "Switchyard"}


def nginx_conf(dir: Path, name: str, body: str) -> Path:
    """A foreground nginx of its own (prefix, pid, logs and temp files under `dir`)."""
    prefix = dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(f"  {t}_temp_path {prefix / t};" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(f"{user}worker_processes auto;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
                    f"events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n{temps}\n"
                    f"  keepalive_requests 10000000;\n{body}\n}}\n")
    return conf


def nginx_proc(name: str, conf: Path, logdir: Path) -> "Proc":
    return Proc(name, [NGINX, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf),
                       "-g", "daemon off;"], logdir)


NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")


def wrk(url: str, concurrency: int, seconds: float, script: Path) -> dict:
    """One wrk run (one thread, `concurrency` keep-alive connections): RPS, p50/p99, errors."""
    r = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                       capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk {url}: {r.stderr.strip()[-2000:]}")
    out = {"rps": 0.0, "p50_us": None, "p99_us": None, "non2xx": 0, "socket_errors": 0, "requests": 0}
    for line in r.stdout.splitlines():
        t = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(t[1])
        elif len(t) == 2 and t[0] in ("50%", "99%"):
            out["p50_us" if t[0] == "50%" else "p99_us"] = wrk_us(t[1])
        elif "Non-2xx or 3xx responses:" in line:
            out["non2xx"] = int(t[-1])
        elif line.strip().startswith("Socket errors:"):
            out["socket_errors"] = sum(int(x.strip(",")) for x in t[2::2])
        elif len(t) > 2 and t[1] == "requests" and t[2] == "in":
            out["requests"] = int(t[0])
    return out


def wrk_us(v: str) -> float:
    for unit, mult in (("us", 1.0), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * mult
    return float(v)


def run_anchors(bin: str, bare_bin: str | None, tmp: Path, procs: list, rounds: int, duration: float,
                warmup: float, concurrencies=(1, 16, 64)) -> dict:
    """nginx proxy_pass, the bare proxy and Switchyard (the realistic path) in front of one nginx
    upstream with a fixed reply, driven by wrk, in interleaved rounds."""
    p_up = free_port()
    up_conf = nginx_conf(tmp, "nginx-upstream", f"  server {{\n    listen 127.0.0.1:{p_up};\n"
                         f"    location / {{ default_type application/json; return 200 '{FIXED_REPLY}'; }}\n  }}")
    up = nginx_proc("nginx-upstream", up_conf, tmp)
    procs.append(up)
    wait_http(f"http://127.0.0.1:{p_up}/", up.proc, 15)

    p_ng = free_port()
    ng_conf = nginx_conf(tmp, "nginx-proxy", f"  upstream fixed {{\n    server 127.0.0.1:{p_up};\n    keepalive 256;\n"
                         f"    keepalive_requests 10000000;\n  }}\n  server {{\n    listen 127.0.0.1:{p_ng};\n"
                         f"    location / {{\n      proxy_pass http://fixed;\n      proxy_http_version 1.1;\n"
                         f"      proxy_set_header Connection \"\";\n      proxy_set_header Authorization \"Bearer {UPSTREAM_KEY}\";\n"
                         f"    }}\n  }}")
    ng = nginx_proc("nginx-proxy", ng_conf, tmp)
    procs.append(ng)
    wait_http(f"http://127.0.0.1:{p_ng}/", ng.proc, 15)
    pids = {"nginx": ng.pid}
    urls = {"nginx": f"http://127.0.0.1:{p_ng}/v1/chat/completions"}

    notes = []
    if bare_bin and Path(bare_bin).exists():
        p_bare = free_port()
        bare = Proc("bare-proxy", [bare_bin, "--listen", f"127.0.0.1:{p_bare}", "--upstream", f"http://127.0.0.1:{p_up}",
                                   "--key", UPSTREAM_KEY], tmp)
        procs.append(bare)
        # The bare proxy answers POSTs only: wait for its port, then check one request.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", p_bare), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        pids["bare"] = bare.pid
        urls["bare"] = f"http://127.0.0.1:{p_bare}/v1/chat/completions"
    else:
        notes.append(f"The bare proxy was not run (no binary at {bare_bin}; bench/run.sh builds it).")

    cfg = tmp / "switchyard-anchors"
    switchyard_config(cfg, p_up)
    p_sy = free_port()
    sy = Proc("switchyard-anchors", [bin, "gateway", "--config", str(cfg), "--listen", f"127.0.0.1:{p_sy}",
                                     "--metrics-addr", "127.0.0.1:0"], tmp, env={"SWITCHYARD_LOG": "warn"})
    procs.append(sy)
    wait_http(f"http://127.0.0.1:{p_sy}/readyz", sy.proc, 30)
    pids["switchyard"] = sy.pid
    urls["switchyard"] = f"http://127.0.0.1:{p_sy}/v1/chat/completions"

    script = tmp / "anchors.lua"
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "word0"}], "max_tokens": 64,
                       "stream": False}, separators=(",", ":"))
    script.write_text(f"wrk.method = \"POST\"\nwrk.body = '{body}'\n"
                      f"wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                      f"wrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n")
    names = [n for n in ANCHORS if n in urls]
    runs = []
    for c in concurrencies:
        for rnd in range(rounds):
            k = rnd % len(names)
            for name in names[k:] + names[:k]:
                if warmup > 0:
                    wrk(urls[name], c, warmup, script)
                cpu0, wall0 = cpu_seconds(pids[name]), time.monotonic()
                r = wrk(urls[name], c, duration, script)
                r["cpu_cores"] = (cpu_seconds(pids[name]) - cpu0) / max(time.monotonic() - wall0, 1e-9)
                r.update({"concurrency": c, "round": rnd, "target": name})
                runs.append(r)
                bad = r["non2xx"] + r["socket_errors"]
                print(f"  anchors   c={c:<3} round {rnd + 1} {name:11} {r['rps']:9.0f} rps  p50 {r['p50_us']:7.0f}µs  "
                      f"p99 {r['p99_us']:7.0f}µs  cpu {r['cpu_cores']:.2f}{'  ERRORS ' + str(bad) if bad else ''}",
                      flush=True)
    for p in (sy, ng, up):
        p.stop()
    guided = {name: profile_guided(b) for name, b in (("switchyard", bin), ("bare", bare_bin or ""))}
    if guided["switchyard"] and guided["bare"]:
        build = "built as Switchyard is: the `dist` profile, profile-guided by `bench/pgo.sh bare-proxy`"
    elif guided["switchyard"] or guided["bare"]:
        built = "Switchyard" if guided["switchyard"] else "the bare proxy"
        build = (f"**not built alike**: only {built} is profile-guided (`bench/pgo.sh`), "
                 "so the ratios below compare builds, not code")
    else:
        build = "built with the same cargo profile as Switchyard"
    return {"runs": runs, "rounds": rounds, "duration": duration, "warmup": warmup, "notes": notes, "build": build,
            "nginx": subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()}


def anchor_stats(an: dict) -> dict:
    """{concurrency: {"rps": {target: median}, "ratio": {other: (median, lo, hi)}, ...}} of Switchyard
    against each anchor, the ratio taken per round (same round, same machine state)."""
    out = {}
    for c in sorted({r["concurrency"] for r in an["runs"]}):
        rs = [r for r in an["runs"] if r["concurrency"] == c]
        by = {n: [r for r in rs if r["target"] == n] for n in ANCHORS}
        st = {"rps": {}, "p50": {}, "p99": {}, "cpu_us": {}, "errors": {}, "ratio": {}}
        for n, xs in by.items():
            if not xs:
                continue
            st["rps"][n] = statistics.median(r["rps"] for r in xs)
            st["p50"][n] = statistics.median(r["p50_us"] for r in xs)
            st["p99"][n] = statistics.median(r["p99_us"] for r in xs)
            st["cpu_us"][n] = statistics.median(r["cpu_cores"] / r["rps"] * 1e6 for r in xs if r["rps"] > 0)
            st["errors"][n] = sum(r["non2xx"] + r["socket_errors"] for r in xs)
        for other in ("bare", "nginx"):
            per = []
            for rnd in sorted({r["round"] for r in rs}):
                a = [r["rps"] for r in by["switchyard"] if r["round"] == rnd]
                b = [r["rps"] for r in by[other] if r["round"] == rnd]
                if a and b and b[0] > 0:
                    per.append(a[0] / b[0])
            if per:
                st["ratio"][other] = (statistics.median(per), min(per), max(per))
        out[c] = st
    return out


def anchors_section(an: dict) -> list[str]:
    st = anchor_stats(an)
    lines = ["## Lean anchors: nginx and a bare Rust proxy against Switchyard (issue 18)", "",
             f"Upstream: nginx answering every request with a fixed OpenAI chat completion. **nginx proxy_pass** = "
             f"{an['nginx'].replace('nginx version: ', '')}, `worker_processes auto`, upstream keep-alive; **bare proxy** = "
             "`bench/bare-proxy` (axum + reqwest: parse the JSON, forward, read the reply; no auth, limits, metrics "
             f"or routing; {an.get('build', 'built with the same cargo profile as Switchyard')}); **Switchyard** = the realistic path above (virtual key with an rpm limit, metrics, "
             f"a route over two backends) on the same upstream. `wrk`, one thread, keep-alive; {an['rounds']} "
             f"interleaved round(s) of {an['duration']:.0f} s (+{an['warmup']:.0f} s warm-up) per point, the order "
             "rotating each round; median of rounds, and in brackets the range of the per-round ratio.", "",
             "| concurrency | nginx proxy_pass | bare axum+reqwest proxy | Switchyard | Switchyard / bare | Switchyard / nginx |",
             "|---:|---:|---:|---:|---:|---:|"]

    def k(v):
        return "–" if v is None else f"{v / 1000:.1f}k"

    def ratio(t):
        return "–" if not t else f"{t[0]:.2f} ({t[1]:.2f}–{t[2]:.2f})"

    for c, s in st.items():
        lines.append(f"| {c} | {k(s['rps'].get('nginx'))} req/s | {k(s['rps'].get('bare'))} | {k(s['rps'].get('switchyard'))} | "
                     f"{ratio(s['ratio'].get('bare'))} | {ratio(s['ratio'].get('nginx'))} |")
    lines += ["", "| concurrency | target | RPS | p50 | p99 | target CPU per request | errors |", "|---:|---|---:|---:|---:|---:|---:|"]
    for c, s in st.items():
        for n in ANCHORS:
            if n in s["rps"]:
                lines.append(f"| {c} | {ANCHOR_TITLES[n]} | {s['rps'][n]:,.0f} | {us(s['p50'][n])} | {us(s['p99'][n])} | "
                             f"{us(s['cpu_us'][n])} | {s['errors'][n]} |")
    lines.append("")
    lines += [f"- {n}" for n in an["notes"]]
    return lines


# ---------------------------------------------------------------- the run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, short runs (about 2 minutes)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per point (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 4, quick 2)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--only", default="", help="comma list of sections: anchors,load,stream,translate,rate,streams,scale")
    a = ap.parse_args()
    rounds = a.rounds or (1 if a.quick else 3)
    duration = a.duration or (2.0 if a.quick else 4.0)
    warmup = 0.5 if a.quick else 1.0
    sections = set(a.only.split(",")) if a.only else {"anchors", "load", "stream", "translate", "rate", "streams", "scale"}
    # The anchors' table (issue 18): rounds of 5 s.
    anchor_duration = a.duration or (2.0 if a.quick else 5.0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    target_dir = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    bin = os.environ.get("SWITCHYARD_BIN", str(Path(target_dir) / "dist" / "switchyard"))
    if not Path(bin).exists():
        print(f"no switchyard binary at {bin}: build what ships with `bench/pgo.sh` (or the plain "
              "`cargo build --profile dist -p switchyard`) and name it in SWITCHYARD_BIN", file=sys.stderr)
        return 2
    bare_bin = os.environ.get("BARE_PROXY_BIN", str(Path(target_dir) / "dist" / "bare-proxy"))
    if "anchors" in sections and not shutil.which("wrk"):
        print("wrk is needed for the anchors (apt-get install wrk), or leave them out with --only", file=sys.stderr)
        return 2
    litellm_bin = os.environ.get("LITELLM_BIN", str(CACHE / "litellm-venv" / "bin" / "litellm"))
    use_litellm = not a.no_litellm and Path(litellm_bin).exists()
    bench = Bench(bin)
    order = hot_order(bin)
    if order and order["found"] < 0.9 * order["listed"] and not order["profile_guided"]:
        print(f"warning: {bin} has only {order['found']} of the {order['listed']} functions hot-symbols.txt orders "
              "(stale after a dependency change): its RSS reads high; rerun bench/hot-symbols.sh on a dist build",
              file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    procs: list[Proc] = []
    started = time.monotonic()
    load_before = machine_load()
    print(f"machine load before: {load_before['load1']:.2f} {load_before['load5']:.2f} {load_before['load15']:.2f}", flush=True)
    results: dict = {"meta": {}, "runs": [], "streams": {}, "scale": None, "anchors": None, "notes": []}
    try:
        p_up = free_port()
        mock = Proc("mock", [bin, "mock-provider", "--listen", f"127.0.0.1:{p_up}"], tmp,
                    env={"SWITCHYARD_LOG": "warn"})
        procs.append(mock)
        wait_http(f"http://127.0.0.1:{p_up}/healthz", mock.proc, 15)

        cfg = tmp / "switchyard"
        switchyard_config(cfg, p_up)
        p_sy = free_port()
        gw = Proc("switchyard", [bin, "gateway", "--config", str(cfg), "--listen", f"127.0.0.1:{p_sy}", "--metrics-addr", "127.0.0.1:0"], tmp,
                  env={"SWITCHYARD_LOG": "warn"})
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{p_sy}/readyz", gw.proc, 30)

        targets = {
            "direct": {"base": f"http://127.0.0.1:{p_up}", "model": "mock-gpt", "pid": mock.pid},
            "switchyard": {"base": f"http://127.0.0.1:{p_sy}", "model": "bench", "pid": gw.pid},
        }
        litellm_version = None
        if use_litellm:
            lcfg = tmp / "litellm.yaml"
            litellm_config(lcfg, p_up)
            p_ll = free_port()
            ll = Proc("litellm", [litellm_bin, "--config", str(lcfg), "--host", "127.0.0.1", "--port", str(p_ll),
                                  "--num_workers", "1"], tmp,
                      env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                           "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"})
            procs.append(ll)
            wait_http(f"http://127.0.0.1:{p_ll}/health/liveliness", ll.proc, 180)
            targets["litellm"] = {"base": f"http://127.0.0.1:{p_ll}", "model": "bench", "pid": ll.pid}
            litellm_version = subprocess.run(
                [str(Path(litellm_bin).parent / "python"), "-c",
                 "import importlib.metadata as m; print(m.version('litellm'))"],
                capture_output=True, text=True).stdout.strip()
        else:
            results["notes"].append("LiteLLM was not run (not installed or --no-litellm).")
        names = list(targets)

        # Does the gateway enforce key limits yet? (rpm: 1, two requests.)
        results["meta"]["key_limits_enforced"] = limits_enforced(p_sy)
        for name, t in targets.items():
            t["rss_idle_kib"] = status_kib(t["pid"], "VmRSS")

        def chat_url(name):
            return targets[name]["base"] + "/v1/chat/completions"

        def point(section, label, name, **kw):
            t = targets[name]
            cpu0, wall0 = cpu_seconds(t["pid"]), time.monotonic()
            r = bench.load(kw.pop("url", chat_url(name)), kw.pop("model", t["model"]), duration=duration,
                           warmup=warmup, **kw)
            # CPU of the target (process and children) over the whole invocation, as cores busy.
            r["cpu_cores"] = (cpu_seconds(t["pid"]) - cpu0) / max(time.monotonic() - wall0, 1e-9)
            r.update({"section": section, "label": label, "target": name, "rss_kib": status_kib(t["pid"], "VmRSS")})
            results["runs"].append(r)
            lat = r["latency_us"]
            extra = f" ttft p50 {r['ttft_us']['p50']}µs" if r.get("ttft_us") else ""
            errs = r["http_errors"] + r["transport_errors"]
            print(f"  {section:9} {label:14} {name:18} {r['rps']:9.0f} rps  p50 {lat['p50']:6}µs  "
                  f"p99 {lat['p99']:6}µs{extra}{'  ERRORS ' + str(errs) + ' ' + str(r['first_error']) if errs else ''}",
                  flush=True)

        def interleave(section, label, runs):
            """runs: list of (target, kwargs); each round runs all of them, rotating the order."""
            for rnd in range(rounds):
                k = rnd % len(runs)
                for name, kw in runs[k:] + runs[:k]:
                    point(section, label, name, **dict(kw))

        if "anchors" in sections:
            print("lean anchors: nginx, the bare proxy and Switchyard on a fixed nginx upstream (wrk)", flush=True)
            results["anchors"] = run_anchors(bin, bare_bin, tmp, procs, rounds, anchor_duration, warmup)
        if "load" in sections:
            print("non-streaming, fixed concurrency", flush=True)
            for c in (1, 16, 64, 256):
                interleave("load", f"c={c}", [(n, {"concurrency": c}) for n in names])
        if "stream" in sections:
            print("streaming, concurrency 16", flush=True)
            interleave("stream", "c=16", [(n, {"concurrency": 16, "stream": True}) for n in names])
        if "translate" in sections:
            print("translation: OpenAI in, Anthropic upstream, streaming, concurrency 16", flush=True)
            runs = [("direct", {"concurrency": 16, "stream": True, "api": "anthropic",
                                "url": targets["direct"]["base"] + "/v1/messages", "model": "claude-mock"}),
                    ("switchyard", {"concurrency": 16, "stream": True, "model": "bench-anthropic"}),
                    ("switchyard", {"concurrency": 16, "stream": True, "model": "bench"})]
            if "litellm" in targets:
                runs.append(("litellm", {"concurrency": 16, "stream": True, "model": "bench-anthropic"}))
            # Distinguish the two Switchyard runs by their model in the report.
            for rnd in range(rounds):
                k = rnd % len(runs)
                for name, kw in runs[k:] + runs[:k]:
                    lbl = "openai→anthropic" if kw.get("model") in ("bench-anthropic", "claude-mock") else "openai→openai"
                    if name == "direct":
                        lbl = "anthropic direct"
                    point("translate", lbl, name, **dict(kw))
        if "rate" in sections:
            # Open loop at a rate every target sustains (half of LiteLLM's best closed-loop
            # throughput, when it ran), then at 2,000/s for the upstream and Switchyard.
            ll_best = max([r["rps"] for r in results["runs"] if r["target"] == "litellm" and r["section"] == "load"],
                          default=0)
            low = max(5, int(ll_best * 0.5)) if "litellm" in targets else 500
            if "litellm" in targets and not ll_best:
                low = 10
            print(f"open loop, {low} and 2000 requests/s", flush=True)
            interleave("rate", f"{low}/s", [(n, {"concurrency": 64, "rate": low}) for n in names])
            interleave("rate", "2000/s", [(n, {"concurrency": 64, "rate": 2000}) for n in ("direct", "switchyard")])

        for name, t in targets.items():
            t["rss_peak_load_kib"] = status_kib(t["pid"], "VmHWM")

        if "streams" in sections:
            count = 200 if a.quick else 1000
            print(f"{count} open streams", flush=True)
            # Each target as it is after the load runs (allocators keep what the c=256 runs grew),
            # and a fresh Switchyard process that has served nothing else.
            p_fresh = free_port()
            fresh = Proc("switchyard-fresh", [bin, "gateway", "--config", str(cfg), "--listen", f"127.0.0.1:{p_fresh}", "--metrics-addr", "127.0.0.1:0"],
                         tmp, env={"SWITCHYARD_LOG": "warn"})
            procs.append(fresh)
            wait_http(f"http://127.0.0.1:{p_fresh}/readyz", fresh.proc, 30)
            targets["switchyard (fresh process)"] = {"base": f"http://127.0.0.1:{p_fresh}", "model": "bench",
                                                     "pid": fresh.pid, "rss_idle_kib": status_kib(fresh.pid, "VmRSS")}
            # The same, its providers on `httpVersion: http2` (h2c to the mock): the streams share
            # a few upstream connections (64 a lane) instead of one each.
            cfg_h2 = tmp / "switchyard-h2c"
            switchyard_config(cfg_h2, p_up, "http2")
            p_h2 = free_port()
            fresh_h2 = Proc("switchyard-fresh-h2c", [bin, "gateway", "--config", str(cfg_h2), "--listen", f"127.0.0.1:{p_h2}",
                                                     "--metrics-addr", "127.0.0.1:0"], tmp, env={"SWITCHYARD_LOG": "warn"})
            procs.append(fresh_h2)
            wait_http(f"http://127.0.0.1:{p_h2}/readyz", fresh_h2.proc, 30)
            targets[H2C] = {"base": f"http://127.0.0.1:{p_h2}", "model": "bench",
                            "pid": fresh_h2.pid, "rss_idle_kib": status_kib(fresh_h2.pid, "VmRSS")}
            for name in names + ["switchyard (fresh process)", H2C]:
                t = targets[name]
                model = HOLD_MODEL if name == "direct" else "bench-hold"
                r = bench.run("streams", "--url", chat_url(name), "--key", KEY, "--model", model, "--stream",
                              "--count", str(count), "--pid", str(t["pid"]), "--limit", "60", timeout=120)
                results["streams"][name] = r
                print(f"  {name:12} opened {r['opened']}/{count} completed {r['completed']} "
                      f"RSS before {r['rss_before_kib']/1024:.1f} MiB peak {r['rss_peak_kib']/1024:.1f} MiB"
                      f"{'  first error: ' + str(r['first_error']) if r['first_error'] else ''}", flush=True)

        for name, t in targets.items():
            t["rss_peak_kib"] = status_kib(t["pid"], "VmHWM")
        results["targets"] = {n: {k: v for k, v in t.items()} for n, t in targets.items()}

        # Stop LiteLLM before the config-scale run: it only involves Switchyard.
        for p in procs:
            if p.name == "litellm":
                p.stop()

        if "scale" in sections:
            print("config scale: 10,000 keys, 1,000 routes", flush=True)
            sdir = tmp / "scale"
            bench.run("config-scale", "--dir", str(sdir), "--upstream", f"http://127.0.0.1:{p_up}/v1",
                      "--write-only")
            p_sc = free_port()
            sgw = Proc("switchyard-scale", [bin, "gateway", "--config", str(sdir), "--listen", f"127.0.0.1:{p_sc}", "--metrics-addr", "127.0.0.1:0"],
                       tmp, env={"SWITCHYARD_LOG": "warn"})
            procs.append(sgw)
            wait_http(f"http://127.0.0.1:{p_sc}/readyz", sgw.proc, 60)
            r = bench.run("config-scale", "--dir", str(sdir), "--no-write", "--upstream", f"http://127.0.0.1:{p_up}/v1",
                          "--rounds", "3" if a.quick else "5", "--gateway", f"http://127.0.0.1:{p_sc}",
                          # Issue 18: no p99 step during a reload at 2,000 req/s.
                          "--rate", "2000", "--duration", "6" if a.quick else "12",
                          "--swaps", "2" if a.quick else "3", timeout=300)
            r["rss_kib"] = status_kib(sgw.pid, "VmHWM")
            results["scale"] = r
            off, live = r["offline"], r["live"]
            print(f"  compile {off['compile_ms']['median']:.0f} ms, swap {off['swap_ms']['median']:.0f} ms, "
                  f"p99 steady {live['steady_us']['p99']}µs, during reload {live['during_reload_us']['p99']}µs", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()

    load_after = machine_load()
    results["meta"].update({
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "rounds": rounds, "duration": duration, "warmup": warmup, "quick": a.quick,
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "load_before": load_before, "load_after": load_after,
        "litellm": litellm_version, "wall_seconds": time.monotonic() - started,
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
        "hot_order": order,
    })
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    (out / "tmp").mkdir(exist_ok=True)
    (out / "tmp" / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    report = render(results)
    (out / f"{stamp}.md").write_text(report)
    (out / "latest.md").write_text(report)
    plot(results, out / "latency.png")
    print(f"\nwrote {out / (stamp + '.md')}, latest.md, latency.png (raw JSON in {out / 'tmp'})")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def limits_enforced(port: int) -> bool:
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
    codes = []
    for _ in range(2):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"authorization": f"Bearer {LIMITED_KEY}",
                                              "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    return codes[-1] == 429


# ---------------------------------------------------------------- the report


def med(runs, path):
    vals = []
    for r in runs:
        if path[0].endswith("_us") and not r.get("ok"):
            continue  # no request finished inside the window: no percentiles
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
            if v is None:
                break
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else None


def us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def signed_us(v):
    if v is None:
        return "–"
    return ("+" if v >= 0 else "−") + us(abs(v))


def mib(kib):
    return "–" if not kib else f"{kib / 1024:.1f} MiB"


def group(results, section, label=None):
    g = {}
    for r in results["runs"]:
        if r["section"] == section and (label is None or r["label"] == label):
            g.setdefault((r["label"], r["target"]), []).append(r)
    return g


def hot_order_line(order: dict | None) -> str:
    if not order:
        return "Hot-code order of the binary: not checked (no `nm`)."
    if order.get("profile_guided"):
        return ("Code layout: profile-guided (built by `bench/pgo.sh`, its profile beside the binary); "
                f"it has {order['found']:,} of the {order['listed']:,} functions `crates/switchyard/hot-symbols.txt` "
                "names (the file names the plain `dist` build's).")
    line = (f"Hot-code order: the binary has {order['found']:,} of the {order['listed']:,} functions "
            "`crates/switchyard/hot-symbols.txt` links together")
    if order["found"] < 0.9 * order["listed"]:
        return line + (" — **stale** (a dependency or feature change renamed them): the RSS figures below read "
                       "6-7 MiB high; rerun `bench/hot-symbols.sh` on a `dist` build.")
    return line + "."


def render(res: dict) -> str:
    m = res["meta"]
    T = res.get("targets", {})
    lines = [f"# Switchyard benchmark — {m['date']}", ""]
    lb, la = m["load_before"], m["load_after"]
    lines += [
        f"Commit `{m['commit']}`{' (with uncommitted changes)' if m['dirty'] else ''}; {m['rustc']}; "
        f"LiteLLM {m['litellm'] or 'not run'}; {m['cpus']} CPUs shared by the load generator, the upstream and the "
        f"target; {m['rounds']} interleaved round(s) of {m['duration']:.0f} s (+{m['warmup']:.1f} s warm-up) per point, "
        f"median of rounds shown. Machine load average before {lb['load1']:.2f} / {lb['load5']:.2f} / {lb['load15']:.2f}, "
        f"after {la['load1']:.2f} / {la['load5']:.2f} / {la['load15']:.2f} (1/5/15 min). Wall time {m['wall_seconds']:.0f} s.",
        "",
        hot_order_line(m.get("hot_order")),
        "",
        "Upstream: `switchyard mock-provider` (fixed reply, no artificial delay). **direct** = the mock itself; "
        "**switchyard** = `switchyard gateway` on a virtual key "
        f"(rpm limit {'enforced' if m.get('key_limits_enforced') else 'configured but NOT enforced: the gateway has no limits yet'}), "
        "metrics on, a route balancing two backends; **litellm** = `litellm` proxy, one worker, master key "
        "(its virtual keys need Postgres), two deployments with an rpm limit, same upstream. Latency is measured by "
        "`switchyard bench load` (keep-alive HTTP/1.1, one connection per unit of concurrency, HDR histograms).",
        "",
    ]
    if res.get("anchors"):
        lines += anchors_section(res["anchors"])
    # Non-streaming.
    g = group(res, "load")
    if g:
        lines += ["## Non-streaming, fixed concurrency", "",
                  "| concurrency | target | RPS | p50 | p99 | added p50 | added p99 | `x-switchyard-overhead-us` p50 / p99 | target CPU (cores) | CPU per request |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in (1, 16, 64, 256):
            lbl = f"c={c}"
            d = g.get((lbl, "direct"))
            for name in ("direct", "switchyard", "litellm"):
                rs = g.get((lbl, name))
                if not rs:
                    continue
                p50, p99 = med(rs, ["latency_us", "p50"]), med(rs, ["latency_us", "p99"])
                add50 = add99 = None
                if d and name != "direct" and p50 is not None and p99 is not None:
                    add50 = p50 - med(d, ["latency_us", "p50"])
                    add99 = p99 - med(d, ["latency_us", "p99"])
                ov = "–"
                if rs[0].get("reported_overhead_us"):
                    ov = f"{us(med(rs, ['reported_overhead_us', 'p50']))} / {us(med(rs, ['reported_overhead_us', 'p99']))}"
                cores = statistics.median([r["cpu_cores"] for r in rs])
                per = [r["cpu_cores"] / r["rps"] * 1e6 for r in rs if r["rps"] > 0]
                cpu = statistics.median(per) if per else None
                errs = sum(r["http_errors"] + r["transport_errors"] for r in rs)
                late = sum(1 for r in rs if not r["ok"])
                note = f" ({errs} errors)" if errs else ""
                if late:
                    note += f" ({late} of {len(rs)} rounds: no request finished inside the {rs[0]['seconds']:.0f} s window)"
                lines.append(f"| {c} | {name}{note} | {med(rs, ['rps']):,.0f} | {us(p50)} | {us(p99)} | "
                             f"{signed_us(add50) if add50 is not None else ''} | {signed_us(add99) if add99 is not None else ''} | {ov} | {cores:.2f} | {us(cpu)} |")
        lines += ["", "*Added* = target minus direct at the same concurrency. On this machine it includes the CPU the "
                  "gateway takes from the load generator and the upstream (2 shared cores), so it grows with load. "
                  "`x-switchyard-overhead-us` is the gateway's own account (handler time minus upstream time; HTTP "
                  "parsing, writing and scheduling excluded). CPU per request = target CPU / RPS.", ""]
        sy = [r for (l, n), rs in g.items() if n == "switchyard" for r in rs]
        ll = [r for (l, n), rs in g.items() if n == "litellm" for r in rs]
        if sy and ll:
            best_sy = max(med(rs, ["rps"]) for (l, n), rs in g.items() if n == "switchyard")
            best_ll = max(med(rs, ["rps"]) for (l, n), rs in g.items() if n == "litellm")
            lines += [f"Best throughput: Switchyard {best_sy:,.0f} req/s, LiteLLM {best_ll:,.0f} req/s: "
                      f"**{best_sy / best_ll:.0f}×**.", ""]
    # Streaming.
    g = group(res, "stream")
    if g:
        lines += ["## Streaming, concurrency 16", "",
                  "| target | RPS | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | total p50 | total p99 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        d = g.get(("c=16", "direct"))
        for name in ("direct", "switchyard", "litellm"):
            rs = g.get(("c=16", name))
            if not rs:
                continue
            t50, t99 = med(rs, ["ttft_us", "p50"]), med(rs, ["ttft_us", "p99"])
            a50 = a99 = ""
            if d and name != "direct":
                a50 = signed_us(t50 - med(d, ["ttft_us", "p50"]))
                a99 = signed_us(t99 - med(d, ["ttft_us", "p99"]))
            lines.append(f"| {name} | {med(rs, ['rps']):,.0f} | {us(t50)} | {us(t99)} | {a50} | {a99} | "
                         f"{us(med(rs, ['latency_us', 'p50']))} | {us(med(rs, ['latency_us', 'p99']))} |")
        lines.append("")
    g = group(res, "translate")
    if g:
        lines += ["## Translation: OpenAI in, Anthropic upstream, streaming, concurrency 16", "",
                  "| path | target | RPS | TTFT p50 | TTFT p99 | total p50 | total p99 |", "|---|---|---:|---:|---:|---:|---:|"]
        for (lbl, name), rs in sorted(g.items(), key=lambda kv: (kv[0][1] != "direct", kv[0][1], kv[0][0])):
            lines.append(f"| {lbl} | {name} | {med(rs, ['rps']):,.0f} | {us(med(rs, ['ttft_us', 'p50']))} | "
                         f"{us(med(rs, ['ttft_us', 'p99']))} | {us(med(rs, ['latency_us', 'p50']))} | {us(med(rs, ['latency_us', 'p99']))} |")
        lines += ["", "Translation cost = Switchyard openai→anthropic minus Switchyard openai→openai "
                  "(same gateway path, only the adapter differs); the anthropic-direct row shows the mock's own "
                  "Anthropic stream cost.", ""]
    g = group(res, "rate")
    if g:
        lines += ["## Open loop, fixed request rate (latency from each request's due time)", "",
                  "| rate | target | achieved RPS | p50 | p99 | p99.9 | max |", "|---|---|---:|---:|---:|---:|---:|"]
        for (lbl, name), rs in sorted(g.items(), key=lambda kv: (int(kv[0][0].split("/")[0]), ["direct", "switchyard", "litellm"].index(kv[0][1]))):
            lines.append(f"| {lbl} | {name} | {med(rs, ['rps']):,.0f} | {us(med(rs, ['latency_us', 'p50']))} | "
                         f"{us(med(rs, ['latency_us', 'p99']))} | {us(med(rs, ['latency_us', 'p999']))} | {us(med(rs, ['latency_us', 'max']))} |")
        lines.append("")
    if res["streams"]:
        lines += [f"## Open streams (RSS from /proc, process and children)", "",
                  "| target | streams open at once | completed | RSS idle | RSS before | RSS peak | per stream |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in res["streams"].items():
            per = (r["rss_peak_kib"] - r["rss_before_kib"]) / max(r["opened"], 1)
            lines.append(f"| {name} | {r['opened']} / {r['count']} | {r['completed']} | {mib(T.get(name, {}).get('rss_idle_kib'))} | "
                         f"{mib(r['rss_before_kib'])} | {mib(r['rss_peak_kib'])} | {per:.1f} KiB |")
        lines += ["", f"Each stream waits 5 s for its first token (`{HOLD_MODEL}`), so all are open at once, then completes.", ""]
    if T:
        lines += ["## Memory over the whole run", "", "| target | RSS idle | peak RSS during the load runs | peak RSS overall |",
                  "|---|---:|---:|---:|"]
        for name, t in T.items():
            lines.append(f"| {name} | {mib(t.get('rss_idle_kib'))} | {mib(t.get('rss_peak_load_kib'))} | {mib(t.get('rss_peak_kib'))} |")
        lines.append("")
    s = res.get("scale")
    if s:
        off, live = s["offline"], s["live"]
        lines += ["## Config scale", "",
                  f"{off['keys']:,} VirtualKeys (each with a Secret) and {off['routes']:,} routes of two backends: "
                  f"{off['yaml_bytes'] / 1e6:.1f} MB of YAML, {off['config_bytes'] / 1e6:.1f} MB of compiled config.", "",
                  "| step | median | worst |", "|---|---:|---:|",
                  f"| read + parse YAML (`Manifests::load_dir`) | {off['load_ms']['median']:.0f} ms | {off['load_ms']['max']:.0f} ms |",
                  f"| reload after one file changed: read + parse (`load_dir_cached`: only changed documents parsed) | {off['reload_load_ms']['median']:.0f} ms | {off['reload_load_ms']['max']:.0f} ms |",
                  f"| reload after one file changed: compile (`compile_with` the last memo: only changed keys compiled) | {off['reload_compile_ms']['median']:.0f} ms | {off['reload_compile_ms']['max']:.0f} ms |",
                  f"| `compile()` | {off['compile_ms']['median']:.0f} ms | {off['compile_ms']['max']:.0f} ms |",
                  f"| swap (`Gateway::swap`: index + hash + drop old) | {off['swap_ms']['median']:.0f} ms | {off['swap_ms']['max']:.0f} ms |",
                  ""]
        if live:
            a2s = live["apply_to_served_ms"]
            lines += [f"Live: a gateway serving that folder at {live['rate']:.0f} req/s (open loop) while the folder changed "
                      f"{len(a2s)} times; file write → new generation served: {', '.join(f'{x:.0f} ms' for x in a2s)} "
                      f"(includes the 150 ms debounce). Gateway peak RSS {mib(s.get('rss_kib'))}.", "",
                      "| requests | count | p50 | p99 | max |", "|---|---:|---:|---:|---:|",
                      f"| steady | {live['steady_us']['count']} | {us(live['steady_us']['p50'])} | {us(live['steady_us']['p99'])} | {us(live['steady_us']['max'])} |",
                      f"| during reload (write → served + 250 ms) | {live['during_reload_us']['count']} | {us(live['during_reload_us']['p50'])} | {us(live['during_reload_us']['p99'])} | {us(live['during_reload_us']['max'])} |",
                      ""]
    lines += ["Profiling of the request path, the fixes it led to and their before/after numbers: "
              "[profiling.md](profiling.md).", ""]
    lines += targets_section(res)
    if res["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    lines += ["Rerun: `bench/run.sh` (full: about 11 min, after `bench/pgo.sh` builds both binaries unless "
              "SWITCHYARD_BIN and BARE_PROXY_BIN name them) or `bench/run.sh --quick`. Plot: `latency.png`.", ""]
    return "\n".join(lines)


def targets_section(res) -> list[str]:
    out = ["## Targets (DESIGN.md / issue 8, issue 18)", "", "| target | measured | met |", "|---|---|:-:|"]
    an = res.get("anchors")
    if an:
        for c, s in anchor_stats(an).items():
            r = s["ratio"].get("bare")
            if not r:
                continue
            need = 0.9 if c == 1 else 1.0
            out.append(f"| Switchyard ≥ {need:g}× the bare proxy's req/s at concurrency {c} (issue 18) | "
                       f"{r[0]:.2f}× (rounds {r[1]:.2f}–{r[2]:.2f}) | {'yes' if r[0] >= need else 'no'} |")
    g = group(res, "load", "c=16")
    d, sy, ll = g.get(("c=16", "direct")), g.get(("c=16", "switchyard")), g.get(("c=16", "litellm"))
    if d and sy:
        a50 = med(sy, ["latency_us", "p50"]) - med(d, ["latency_us", "p50"])
        a99 = med(sy, ["latency_us", "p99"]) - med(d, ["latency_us", "p99"])
        out.append(f"| added p50 ≤ 100 µs at concurrency 16 | {signed_us(a50)} | {'yes' if a50 <= 100 else 'no'} |")
        out.append(f"| added p99 ≤ 1 ms at concurrency 16 | {signed_us(a99)} | {'yes' if a99 <= 1000 else 'no'} |")
    gr = group(res, "rate")
    for (lbl, name), rs in sorted(gr.items()):
        d = gr.get((lbl, "direct"))
        if name == "switchyard" and d:
            a50 = med(rs, ["latency_us", "p50"]) - med(d, ["latency_us", "p50"])
            a99 = med(rs, ["latency_us", "p99"]) - med(d, ["latency_us", "p99"])
            out.append(f"| (for reference) added p50 / p99 at a fixed {lbl} (open loop) | {signed_us(a50)} / {signed_us(a99)} | "
                       f"{'yes' if a50 <= 100 and a99 <= 1000 else 'no'} |")
    gl = group(res, "load")
    sy_best = max([med(rs, ["rps"]) for (l, n), rs in gl.items() if n == "switchyard"], default=None)
    ll_best = max([med(rs, ["rps"]) for (l, n), rs in gl.items() if n == "litellm"], default=None)
    if sy_best:
        out.append(f"| ≥ 20,000 req/s through one gateway | {sy_best:,.0f} req/s (load generator and upstream on the same 2 cores) | {'yes' if sy_best >= 20000 else 'no'} |")
    if sy_best and ll_best:
        out.append(f"| ≥ 250× LiteLLM's req/s | {sy_best / ll_best:.0f}× | {'yes' if sy_best / ll_best >= 250 else 'no'} |")
    for key in ("switchyard", "switchyard (fresh process)", H2C):
        st = res["streams"].get(key)
        if not st:
            continue
        out.append(f"| RSS ≤ 60 MB with 1,000 open streams ({key}) | {st['rss_peak_kib'] * 1024 / 1e6:.1f} MB "
                   f"({st['rss_peak_kib'] / 1024:.1f} MiB) peak with {st['opened']} open | "
                   f"{'yes' if st['rss_peak_kib'] * 1024 <= 60e6 and st['opened'] >= 1000 else 'no'} |")
        if key in ("switchyard (fresh process)", H2C):
            out.append(f"| RSS ≤ 48 MiB for a fresh gateway with 1,000 open streams (issue 18; {key}) | "
                       f"{st['rss_peak_kib'] / 1024:.1f} MiB peak with {st['opened']} open | "
                       f"{'yes' if st['rss_peak_kib'] <= 48 * 1024 and st['opened'] >= 1000 else 'no'} |")
    s = res.get("scale")
    if s:
        c = s["offline"]["compile_ms"]["median"] + s["offline"]["load_ms"]["median"]
        out.append(f"| 10k keys + 1k routes compiled < 1 s | {c:.0f} ms (read + compile) | {'yes' if c < 1000 else 'no'} |")
        out.append(f"| 10k keys + 1k routes read, validated and compiled < 400 ms (issue 18) | {c:.0f} ms | "
                   f"{'yes' if c < 400 else 'no'} |")
        if s["live"]:
            sp, dp = s["live"]["steady_us"]["p99"], s["live"]["during_reload_us"]["p99"]
            out.append(f"| swapped with no latency spike | p99 {us(sp)} steady vs {us(dp)} during reload | {'yes' if dp <= max(2 * sp, sp + 1000) else 'no'} |")
    out.append("")
    return out


def plot(res: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    g = group(res, "load")
    if not g:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"direct": "#777777", "switchyard": "#1f77b4", "litellm": "#d62728"}
    cs = [1, 16, 64, 256]
    for name in ("direct", "switchyard", "litellm"):
        xs = [c for c in cs if (f"c={c}", name) in g and med(g[(f"c={c}", name)], ["latency_us", "p50"]) is not None]
        if not xs:
            continue
        p50 = [med(g[(f"c={c}", name)], ["latency_us", "p50"]) / 1000 for c in xs]
        p99 = [med(g[(f"c={c}", name)], ["latency_us", "p99"]) / 1000 for c in xs]
        rps = [med(g[(f"c={c}", name)], ["rps"]) for c in xs]
        ax1.plot(xs, p50, "-o", color=colors[name], label=f"{name} p50")
        ax1.plot(xs, p99, "--o", color=colors[name], alpha=0.6, label=f"{name} p99")
        ax2.plot(xs, rps, "-o", color=colors[name], label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (connections)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("Non-streaming latency vs concurrency")
    ax2.set_ylabel("requests / s")
    ax2.set_title("Throughput vs concurrency")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    m = res["meta"]
    fig.suptitle(f"Switchyard vs direct vs LiteLLM {m.get('litellm') or ''} — same mock upstream, "
                 f"{m['cpus']} shared CPUs, {m['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
