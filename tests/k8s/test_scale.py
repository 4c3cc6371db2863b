"""Scale on a real API server: 1,000 LLMRoutes and 10,000 VirtualKeys (half with user Secrets, half
with keys the operator generates) applied to one fleet, with the operator and a gateway (as a pod
would run it: the fleet's ServiceAccount token) as local processes.

Measured from the first apply: (a) the fleet's config Secrets hold a complete generation with all
routes and keys, (b) the gateway answers a chat on the last route with the last key, (c) every
VirtualKey is Ready. Then (d) ten single-route edits, one after another: each a server-side apply
straight to the API server, timed to the gateway's first answer from the new backend (every edit
must be served; the times are printed, not asserted). Also: the operator's peak RSS, the
gateway's RSS, the config shards, and the operator's reconcile counts. The numbers are printed; with SWITCHYARD_WRITE_RESULTS=1 (a
benchmark run, not a test run) they are also written to bench/results/k8s-scale.md, which is
tracked: a test run leaves the tree as it found it.

Slow: the run is bound by the API server's write rate. About 7-12 minutes on this machine's 2 cores
while they were shared with other builds (load average 5-9); it stays in the suite so CI runs it.
SWITCHYARD_SCALE=small runs 100 routes and 1,000 keys (about 1-2 minutes) and never writes results.
"""

import base64
import datetime
import hashlib
import json
import math
import os
import statistics
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from harness import REPO, Process, binary, free_port, wait_http
from operator_setup import Api, metric_values, start_operator

SMALL = os.environ.get("SWITCHYARD_SCALE") == "small"
WRITE_RESULTS = os.environ.get("SWITCHYARD_WRITE_RESULTS") == "1"
ROUTES = 100 if SMALL else 1_000
KEYS = 1_000 if SMALL else 10_000
FLEET = "scale"
GROUP = "/apis/switchyard.dev/v1alpha1"
# The API server refuses objects over 1.5 MiB (etcd's request limit).
OBJECT_LIMIT = 1536 * 1024
# Wall-time budget of one run: failing is better than hanging CI.
BUDGET_S = 900
# Single-route edits timed after the full apply.
EDITS = 10
RESULTS = REPO / "bench" / "results" / "k8s-scale.md"


def key_value(i):
    return f"sk-scale-user-{i:05d}"


def user_supplied(i):
    """Odd keys use a Secret the test writes; even keys get one the operator generates."""
    return i % 2 == 1


def route(ns, i):
    return (f"{GROUP}/namespaces/{ns}/llmroutes/route-{i:04d}", {
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "LLMRoute",
        "metadata": {"name": f"route-{i:04d}", "namespace": ns},
        "spec": {"model": f"route-{i:04d}", "backends": [{"providerRef": {"name": "mock"}, "model": f"mock-{i:04d}"}]},
    })


# User-supplied keys are kept 100 to a Secret (a team's keys together, as a secret manager would
# sync them), which also keeps the test's own API traffic down.
PER_SECRET = 100


def user_secret(ns, group):
    name = f"user-keys-{group:03d}"
    keys = [i for i in range(group * PER_SECRET, min((group + 1) * PER_SECRET, KEYS)) if user_supplied(i)]
    return (f"/api/v1/namespaces/{ns}/secrets/{name}", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "data": {f"key-{i:05d}": base64.b64encode(key_value(i).encode()).decode() for i in keys},
    })


def virtual_key(ns, i):
    spec = {"labels": {"team": f"team-{i % 50}"}, "limits": {"rpm": 1_000_000}}
    if user_supplied(i):
        spec["secretRef"] = {"name": f"user-keys-{i // PER_SECRET:03d}", "key": f"key-{i:05d}"}
    return (f"{GROUP}/namespaces/{ns}/virtualkeys/key-{i:05d}", {
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "VirtualKey",
        "metadata": {"name": f"key-{i:05d}", "namespace": ns},
        "spec": spec,
    })


def proc_status(pid):
    """VmRSS and VmHWM of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(cp, pids):
    """CPU seconds of the control plane's processes and of `pids` (name -> pid)."""
    out = {p.name: cpu_seconds(p.popen.pid) for p in cp._procs if p.alive()}
    out.update({name: cpu_seconds(pid) for name, pid in pids.items()})
    return out


class ShardWatch:
    """Polls the fleet's config shards (metadata only; the bytes once per new complete generation)
    and records when a complete generation first holds every route and key."""

    def __init__(self, api, ns):
        self.api, self.ns = api, ns
        self.base = f"/api/v1/namespaces/{ns}/secrets?labelSelector=" + urllib.parse.quote(
            f"switchyard.dev/fleet={FLEET},switchyard.dev/config-generation")
        self.seen_hashes = set()
        self.generations = set()
        self.complete_at = None
        self.config = None
        self.shards = []

    def poll(self):
        meta = self.api.get(self.base, accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        annotations = {item["metadata"]["name"]: item["metadata"].get("annotations", {}) for item in meta["items"]}
        self.generations.update(int(a["switchyard.dev/config-generation"]) for a in annotations.values())
        index = annotations.get(f"{FLEET}-config-0", {})
        if "switchyard.dev/config-parts" not in index:
            return False
        digest, parts = index["switchyard.dev/config-hash"], index["switchyard.dev/config-parts"].split(",")
        published = [annotations.get(f"{FLEET}-config-{n}", {}).get("switchyard.dev/config-part-hash")
                     for n in range(1, len(parts) + 1)]
        if published != parts or digest in self.seen_hashes:
            return False
        full = {s["metadata"]["name"]: s for s in self.api.get(self.base)["items"]}
        shards = [full.get(f"{FLEET}-config-{n}") for n in range(len(parts) + 1)]
        if any(s is None for s in shards):
            return False
        raw = [base64.b64decode(s["data"]["config.json"]) for s in shards]
        if [hashlib.sha256(b).hexdigest() for b in raw[1:]] != parts:
            return False  # caught between two writes of a newer generation
        self.seen_hashes.add(digest)
        config = {"routes": [], "keys": []}
        for b in raw[1:]:
            part = json.loads(b)
            config["routes"] += part["routes"]
            config["keys"] += part["keys"]
        if len(config["routes"]) == ROUTES and len(config["keys"]) == KEYS:
            self.complete_at = time.monotonic()
            self.config = config
            self.shards = [(s["metadata"]["name"], len(b), len(json.dumps(s).encode())) for s, b in zip(shards, raw)]
            return True
        return False


def test_thousand_routes_ten_thousand_keys(control_plane, namespace, tmp_path):
    cp, ns = control_plane, namespace
    api = Api(cp)
    op, metrics_port = start_operator(cp, tmp_path, log_filter="info,switchyard_operator::controller=debug")
    gw = None
    try:
        # The fleet and its provider first, so the gateway can start (as a pod would) before the bulk.
        cp.kubectl("apply", "-f", "-", check=True, input=f"""apiVersion: switchyard.dev/v1alpha1
kind: LLMGateway
metadata: {{name: {FLEET}, namespace: {ns}}}
spec: {{replicas: 1}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: {ns}}}
spec:
  type: mock
  mock: {{timeToFirstToken: 1ms, tokensPerSecond: 100000}}
""")
        cp.wait_for("fleet serviceaccount",
                    lambda: cp.kubectl("get", "sa", f"{FLEET}-gateway", "-n", ns).returncode == 0, 60)
        token = cp.kubectl("create", "token", f"{FLEET}-gateway", "-n", ns, check=True).stdout.strip()
        kubeconfig = cp.token_kubeconfig(token, tmp_path / "gw-kubeconfig", user="gateway", namespace=ns)
        port = free_port()
        gw = Process([binary(), "gateway", "--kubernetes", "--fleet", FLEET, "--namespace", ns,
                      "--listen", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"], env={"KUBECONFIG": str(kubeconfig),
                                                                "SWITCHYARD_LOG": "warn,switchyard_gateway::reload=info"})
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=gw.proc)
        before = metric_values(metrics_port, "switchyard_operator_reconciles_total")
        cpu_before = cpu_by_process(cp, {"operator": op.proc.pid, "gateway": gw.proc.pid})

        last_route, last_key = f"route-{ROUTES - 1:04d}", KEYS - 1
        assert user_supplied(last_key)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key_value(last_key), max_retries=0,
                               timeout=10)
        served = {}
        done = threading.Event()

        def probe():
            while not done.is_set():
                try:
                    r = client.chat.completions.create(model=last_route, messages=[{"role": "user", "content": "last"}])
                    served["at"], served["model"] = time.monotonic(), r.model
                    return
                except openai.APIError:
                    done.wait(0.2)

        shard_watch = ShardWatch(api, ns)

        def watch_shards():
            while not done.is_set() and shard_watch.complete_at is None:
                try:
                    shard_watch.poll()
                except AssertionError:
                    pass
                done.wait(0.5)

        start = time.monotonic()
        threads = [threading.Thread(target=probe, daemon=True), threading.Thread(target=watch_shards, daemon=True)]
        for t in threads:
            t.start()
        docs = [route(ns, i) for i in range(ROUTES)]
        docs += [user_secret(ns, g) for g in range((KEYS + PER_SECRET - 1) // PER_SECRET)]
        docs += [virtual_key(ns, i) for i in range(KEYS)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda d: api.apply(*d), docs))
        applied = time.monotonic() - start
        print(f"\napplied {len(docs)} objects in {applied:.1f} s", flush=True)

        deadline = start + BUDGET_S
        while (shard_watch.complete_at is None or "at" not in served) and time.monotonic() < deadline:
            assert op.proc.poll() is None, "operator exited:\n" + op.output()[-5000:]
            assert gw.proc.poll() is None, "gateway exited:\n" + gw.output()[-5000:]
            time.sleep(0.2)
        assert shard_watch.complete_at is not None, "no complete generation with every route and key"
        assert "at" in served, "the last route was never served with the last key"
        assert served["model"] == f"mock-{ROUTES - 1:04d}"
        config_s, served_s = shard_watch.complete_at - start, served["at"] - start
        print(f"complete config after {config_s:.1f} s, last route served after {served_s:.1f} s", flush=True)

        # Every VirtualKey reports Ready=True.
        def ready_count():
            items = api.get(f"{GROUP}/namespaces/{ns}/virtualkeys")["items"]
            return sum(1 for k in items for c in k.get("status", {}).get("conditions", [])
                       if c["type"] == "Ready" and c["status"] == "True"), len(items)

        while (counted := ready_count())[0] < KEYS and time.monotonic() < deadline:
            time.sleep(1)
        assert counted == (KEYS, KEYS), f"VirtualKeys Ready: {counted[0]} of {counted[1]}"
        ready_s = time.monotonic() - start

        # A generated key (the last one) works too, and the config names every route and key.
        generated = api.get(f"/api/v1/namespaces/{ns}/secrets/key-{KEYS - 2:05d}-key")
        gen_key = base64.b64decode(generated["data"]["key"]).decode()
        r = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=gen_key, max_retries=0).chat.completions.create(
            model=last_route, messages=[{"role": "user", "content": "generated"}])
        assert r.choices[0].message.content == "Hello! You said: generated"
        config = shard_watch.config
        assert {r["model"] for r in config["routes"]} == {f"route-{i:04d}" for i in range(ROUTES)}
        assert {k["name"] for k in config["keys"]} == {f"key-{i:05d}" for i in range(KEYS)}
        for name, _, size in shard_watch.shards:
            assert size < OBJECT_LIMIT, f"{name} is {size} bytes"

        # Settle, then read memory and reconcile counts.
        time.sleep(2)
        done.set()
        op_mem, gw_mem = proc_status(op.proc.pid), proc_status(gw.proc.pid)
        after = metric_values(metrics_port, "switchyard_operator_reconciles_total")
        durations = metric_values(metrics_port, "switchyard_operator_reconcile_duration_seconds_sum")
        reconciles = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
        cpu = cpu_by_process(cp, {"operator": op.proc.pid, "gateway": gw.proc.pid})
        cpu = {k: v - cpu_before.get(k, 0) for k, v in cpu.items()}
        fleet_status = api.get(f"{GROUP}/namespaces/{ns}/llmgateways/{FLEET}")["status"]

        edits = edit_routes(api, ns, port)
        print("single-route edits, apply to served (ms, in order): "
              + ", ".join(f"{t * 1000:.0f}" for t in edits), flush=True)
        edits.sort()
        p50, p99 = statistics.median(edits), percentile(edits, 0.99)

        rows = [
            ("build", f"`{build_profile()}`"),
            ("objects applied", f"{ROUTES:,} LLMRoutes, {KEYS:,} VirtualKeys ({KEYS // 2:,} generated, "
                                f"{KEYS // 2:,} from {len(docs) - ROUTES - KEYS} user Secrets)"),
            ("apply (8 concurrent server-side applies)", f"{applied:.1f} s"),
            ("(a) complete config generation in the shards", f"{config_s:.1f} s"),
            ("(b) gateway serves the last route with the last key", f"{served_s:.1f} s"),
            ("(c) every VirtualKey Ready", f"{ready_s:.1f} s"),
            ("config generations published", f"{fleet_status.get('configGeneration')}"),
            ("config shards (the index, then the parts)", f"{len(shard_watch.shards)}: {shard_bytes(shard_watch.shards)}"),
            ("operator RSS peak / now", f"{op_mem['VmHWM']:.0f} MiB / {op_mem['VmRSS']:.0f} MiB"),
            ("gateway RSS peak / now", f"{gw_mem['VmHWM']:.0f} MiB / {gw_mem['VmRSS']:.0f} MiB"),
            ("reconciles (llmgateway / virtualkey)",
             f"{reconciles.get('llmgateway', 0)} / {reconciles.get('virtualkey', 0)}"),
            ("CPU seconds from first apply to the end",
             ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))),
            ("time in reconciles (llmgateway / virtualkey)",
             f"{durations.get('llmgateway', 0):.1f} s / {durations.get('virtualkey', 0):.1f} s"),
            (f"{EDITS} single-route edits after the full apply, apply to served (p50 / p99 / max)",
             f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms / {edits[-1] * 1000:.0f} ms"),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n--- scale ---")
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        print("-------------")
        if WRITE_RESULTS and not SMALL:
            write_results(rows)
        assert op_mem["VmHWM"] < 2048, "operator peak RSS over 2 GiB"
    finally:
        if gw is not None:
            gw.stop()
            print("\n".join([line for line in gw.output().splitlines() if "config reloaded" in line][-12:]))
        op.stop()
        timings = [line for line in op.output().splitlines() if "reconciled fleet" in line or "object statuses" in line]
        print("\n".join(timings[-40:]))


def shard_bytes(shards):
    """The shards' sizes: the index, the parts' total, smallest and largest (bytes of configuration),
    and the largest Secret as the API server sends it (base64, metadata)."""
    (_, index, _), parts = shards[0], [b for _, b, _ in shards[1:]]
    largest = max(s for _, _, s in shards)
    return (f"index {index / 1024:.1f} KiB; parts {sum(parts) / 1024:.0f} KiB in all, "
            f"{min(parts) / 1024:.0f}-{max(parts) / 1024:.0f} KiB each; largest Secret {largest / 1024:.0f} KiB")


def percentile(sorted_values, q):
    """The nearest-rank percentile `q` (0-1) of sorted values."""
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def edit_routes(api, ns, port):
    """EDITS single-route edits, one after another once the previous is served: each a server-side
    apply straight to the API server giving a route a new backend model, timed from the write to
    the gateway's first answer from the new backend (polled every 10 ms). Returns the times (s)."""
    times = []
    for i in range(EDITS):
        n = (i * 97 + 13) % ROUTES  # spread over the fleet, a different route each time
        path, doc = route(ns, n)
        model = f"mock-{n:04d}-edit-{i}"
        doc["spec"]["backends"][0]["model"] = model
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key_value(KEYS - 1), max_retries=0,
                               timeout=10)
        start = time.monotonic()
        api.apply(path, doc)
        while True:
            try:
                served = client.chat.completions.create(model=f"route-{n:04d}",
                                                        messages=[{"role": "user", "content": "edit"}]).model
            except openai.APIError:
                served = None
            if served == model:
                break
            assert time.monotonic() - start < 60, f"edit {i} (route-{n:04d}) not served after 60 s"
            time.sleep(0.01)
        times.append(time.monotonic() - start)
    return times


def build_profile():
    """The cargo profile of the binary under test, from its path (`target/<profile>/switchyard`)."""
    return Path(binary()).parent.name


def write_results(rows):
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    profile = build_profile()
    lines = [
        "# Kubernetes scale: 1,000 LLMRoutes and 10,000 VirtualKeys",
        "",
        f"Written by `tests/k8s/test_scale.py` on {date}: a real kube-apiserver (v1.36.3, etcd without",
        "fsync) from `tests/k8s/controlplane.py`, the operator and one gateway as local processes",
        f"(`{profile}` build), on 2 shared cores. Times are from the first apply.",
        "",
        "| what | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Rerun:",
        "",
        "```sh",
        "export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}",
        "cargo build -p switchyard" + ("" if profile == "debug" else f" --profile {profile}"),
        f"SWITCHYARD_WRITE_RESULTS=1 SWITCHYARD_BIN=$CARGO_TARGET_DIR/{profile}/switchyard \\",
        "    python -m pytest -p no:cacheprovider -q -s \\",
        "    tests/k8s/test_scale.py",
        "```",
        "",
    ]
    # Notes kept by hand (before/after comparisons) follow the marker and survive a rerun.
    marker = "<!-- notes -->"
    notes = RESULTS.read_text().partition(marker)[2] if RESULTS.exists() else ""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + (marker + notes if notes else ""))
