"""The soak: two gateways sharing one redis-server in front of the mock provider with faults mixed
in, clients that abandon streams, a key rotated and a route edited while it runs, and dozens of
keys with limits and budgets. At the end the ledgers must balance, per key:

- the sum of per-request costs in the access logs (both gateways) = the spend in Redis = the
  Prometheus spend counter (`switchyard_spend_usd_total`, summed over routes for the key's
  `team`, which is the key's own name here), to 1e-9 USD;
- = what the mock says it served (`GET /mock/ledger`), priced with the manifests' prices: exactly
  for requests whose usage reached the gateway, within ESTIMATE_TOLERANCE for streams that ended
  without usage (abandoned by the client or cut by the upstream);
- no budget exceeded by more than one request's worst cost; never more than `rpm` admitted
  requests of a key in any 60-second window (access logs of both gateways);
- no panic, no 5xx the faults do not explain, RSS of each gateway flat after warm-up (< 10%).

Library: `run(minutes, workdir) -> Result`, `Result.failures()`, `Result.table()`.
CLI: `python tests/soak/soak.py --minutes 10 [--out bench/results/soak.md]`.

The mock files each request under its `x-request-id` header, else the body's `user` field. The
gateway does not forward `x-request-id` upstream, so every request carries its id in both: the
header (the access log's `request_id`) and `user` (passed through to the OpenAI-type upstream).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from harness import Gateway, MockProvider, RedisServer  # noqa: E402

NS = "default"
# USD per million tokens, per upstream model: must match tests/soak/config/routes.yaml.
PRICES = {
    "soak-gpt-a-o200k-tps-40": (200, 600),
    "soak-mock-429": (200, 600),
    "soak-mock-503": (200, 600),
    "soak-mock-500": (200, 600),
    "soak-mock-cut-o200k-tps-40": (300, 900),
    "soak-mock-slow-800ms-o200k-tps-40": (100, 400),
    "soak-gpt-b-o200k-tps-40": (1000, 2000),
}
# The model of each backend (the access log names the backend that answered).
BACKEND_MODEL = {
    "ok": "soak-gpt-a-o200k-tps-40", "limited": "soak-mock-429", "unavailable": "soak-mock-503",
    "broken": "soak-mock-500", "cut": "soak-mock-cut-o200k-tps-40",
    "slow": "soak-mock-slow-800ms-o200k-tps-40", "standby": "soak-gpt-b-o200k-tps-40",
}
# Every route a request to each model name may end on (soak-a falls back to soak-b).
REACHABLE = {"soak-a": ["soak-a", "soak-b"], "soak-b": ["soak-b"]}
ROUTE_MODELS = {
    "soak-a": ["soak-gpt-a-o200k-tps-40", "soak-mock-429", "soak-mock-503", "soak-mock-500", "soak-mock-cut-o200k-tps-40"],
    "soak-b": ["soak-mock-slow-800ms-o200k-tps-40", "soak-gpt-b-o200k-tps-40"],
}
# The mock's longest reply here: "Hello! You said:" (5 tokens) and 10 words of at most 3 tokens
# ("foxtrot"), in o200k_base, as the mock counts for these models (`o200k` in their names).
MAX_TOKENS = 35
# A stream that ended without usage is billed from an estimate: per key, the estimated part may
# differ from what the mock served by this fraction of it. The mock counts these models' tokens
# as OpenAI counts gpt-4o's (o200k_base, 3 a message and 3 priming the reply); the gateway
# estimates the prompt with the same tokenizer and 4 a message, and the completion from the
# text the client was sent (the mock may have written a token or two more that never reached
# it). docs/limits.md, "What is charged when".
ESTIMATE_TOLERANCE = 0.25
EXACT = 1e-9
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def cost(model: str, prompt: int, completion: int) -> float:
    i, o = PRICES[model]
    return (prompt * i + completion * o) / 1e6


@dataclass
class KeySpec:
    name: str
    value: str
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    budget: float | None = None

    def manifest(self) -> str:
        limits = {k: v for k, v in (("rpm", self.rpm), ("tpm", self.tpm), ("maxParallel", self.parallel)) if v}
        spec = f"  labels: {{team: {self.name}}}\n"
        if limits:
            spec += "  limits: {" + ", ".join(f"{k}: {v}" for k, v in limits.items()) + "}\n"
        if self.budget is not None:
            spec += f"  budget: {{maxSpend: {self.budget}, period: total, action: block}}\n"
        return (
            f"apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\n"
            f"metadata: {{name: {self.name}, namespace: {NS}}}\n"
            f"spec:\n  secretRef: {{name: {self.name}-key, key: key}}\n{spec}---\n"
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {self.name}-key, namespace: {NS}}}\n"
            f"stringData: {{key: {self.value}}}\n"
        )


def key_specs() -> list[KeySpec]:
    """30 keys: plain ones, rpm-limited, tpm-limited, parallel-limited, and budgets (the small
    ones run out within a minute, the others not)."""
    keys = []
    for i in range(30):
        k = KeySpec(f"soak-k{i:02d}", f"sk-soak-{i:02d}")
        if i % 5 == 1:
            k.rpm = 20 + i
        if i % 5 == 2:
            k.tpm = 1500 + 100 * i
        if i % 5 == 3:
            k.parallel = 2
        if i % 6 == 4:
            k.budget = [0.1, 0.2, 0.3, 0.5, 5.0][(i // 6) % 5]
        keys.append(k)
    return keys


ROTATED = "soak-k07"  # its Secret gets a new value mid-run


def write_keys(folder: Path, keys: list[KeySpec]) -> None:
    (folder / "keys.yaml").write_text("---\n".join(k.manifest() for k in keys))


# --- Running --------------------------------------------------------------------------------


@dataclass
class Sent:
    id: str
    key: str
    route: str
    gateway: int
    mode: str  # whole | stream | abandon
    status: int = 0
    error: str | None = None
    prompt_words: int = 0


@dataclass
class Result:
    minutes: float
    keys: list[KeySpec]
    sent: list[Sent]
    access: list[dict]  # access log lines' fields, with `_gw` and `_ts`
    redis_spend: dict[str, float]
    prom_spend: dict[str, float] | None
    prom_source: str
    ledger: list[dict]
    rss: list[list[tuple[float, int]]]  # per gateway: (seconds since start, kB)
    warmup: float
    panics: list[str]
    events: list[str]
    redis_outages: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    classes: dict[str, list] = field(default_factory=dict)  # kind -> [requests, billed, served]
    problems: list[str] = field(default_factory=list)
    rpm_windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (certain, possible)

    def table(self) -> str:
        head = ("| key | limits | requests | 200 | log $ | Redis $ | Prometheus $ | mock $ exact | "
                "log $ exact | mock $ estimated | log $ estimated | delta log-mock |")
        lines = [head, "|" + "---|" * 12]
        for r in self.rows:
            prom = "-" if r["prom"] is None else f"{r['prom']:.9f}"
            lines.append(
                f"| {r['key']} | {r['limits']} | {r['requests']} | {r['ok']} | {r['log']:.9f} | {r['redis']:.9f} "
                f"| {prom} | {r['mock_exact']:.9f} | {r['log_exact']:.9f} | {r['mock_est']:.9f} "
                f"| {r['log_est']:.9f} | {r['log'] - r['mock_exact'] - r['mock_est']:+.9f} |"
            )
        t = {k: sum(r[k] for r in self.rows) for k in ("requests", "ok", "log", "redis", "mock_exact",
                                                        "log_exact", "mock_est", "log_est")}
        tp = sum((r["prom"] or 0.0) for r in self.rows)
        lines.append(
            f"| **all** | | {t['requests']} | {t['ok']} | {t['log']:.9f} | {t['redis']:.9f} | {tp:.9f} "
            f"| {t['mock_exact']:.9f} | {t['log_exact']:.9f} | {t['mock_est']:.9f} | {t['log_est']:.9f} "
            f"| {t['log'] - t['mock_exact'] - t['mock_est']:+.9f} |"
        )
        return "\n".join(lines)


class Soak:
    def __init__(self, minutes: float, workdir: Path, workers: int = 12, seed: int = 1):
        self.minutes = minutes
        self.duration = minutes * 60
        self.workdir = workdir
        self.workers = workers
        self.rng = random.Random(seed)
        self.keys = key_specs()
        self.values = {k.name: k.value for k in self.keys}
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.counter = 0

    # -- setup

    def start(self) -> None:
        self.config = self.workdir / "config"
        shutil.copytree(HERE / "config", self.config)
        self.mock = MockProvider()
        providers = self.config / "providers.yaml"
        providers.write_text(providers.read_text().replace("http://127.0.0.1:9999", self.mock.url))
        write_keys(self.config, self.keys)
        self.redis = RedisServer(self.workdir)
        # failMode closed: limits are exact or the request is refused. (Open would let each
        # gateway admit a key's rpm alone while Redis is marked down, which a call over 500 ms on
        # a loaded machine does: docs/limits.md.)
        (self.config / "gateway.yaml").write_text(
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMGateway\nmetadata: {name: soak, namespace: default}\n"
            f'spec:\n  redis: {{url: "{self.redis.url}", failMode: closed}}\n'
        )
        env = {"SWITCHYARD_LOG_FORMAT": "json", "RUST_LOG": "info"}
        self.gateways = [Gateway(self.config, env=env), Gateway(self.config, env=env)]
        self.t0 = time.monotonic()

    def stop(self) -> None:
        for gw in getattr(self, "gateways", []):
            gw.stop()
        if hasattr(self, "mock"):
            self.mock.stop()
        if hasattr(self, "redis"):
            self.redis.stop()

    # -- clients

    def next_id(self) -> str:
        with self.lock:
            self.counter += 1
            return f"soak-{os.getpid()}-{self.counter:07d}"

    def client(self, rng: random.Random, deadline: float) -> None:
        clients = [httpx.Client(base_url=gw.url, timeout=30) for gw in self.gateways]
        try:
            while time.monotonic() < deadline:
                self.one(rng, clients)
                time.sleep(rng.uniform(0, 0.05))
        finally:
            for c in clients:
                c.close()

    def one(self, rng: random.Random, clients: list[httpx.Client]) -> None:
        key = rng.choice(self.keys).name
        route = rng.choice(["soak-a", "soak-a", "soak-b"])
        mode = rng.choices(["whole", "stream", "abandon"], weights=[4, 4, 2])[0]
        g = rng.randrange(len(clients))
        rid = self.next_id()
        words = rng.randint(2, 10)
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        s = Sent(rid, key, route, g, mode, prompt_words=words)
        body = {"model": route, "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS,
                "user": rid, "stream": mode != "whole"}
        with self.lock:
            value = self.values[key]
        headers = {"authorization": f"Bearer {value}", "x-request-id": rid}
        try:
            if mode == "whole":
                r = clients[g].post("/v1/chat/completions", json=body, headers=headers)
                s.status = r.status_code
                if r.status_code >= 500:
                    s.error = r.text[:300]
            else:
                cut_at = rng.randint(1, 3000) if mode == "abandon" else None
                with clients[g].stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                    s.status = r.status_code
                    got = 0
                    for chunk in r.iter_raw():
                        got += len(chunk)
                        if cut_at is not None and got >= cut_at:
                            break  # abandoned: the response is closed mid-stream
                    if r.status_code >= 500:
                        s.error = "stream answered 5xx"
        except httpx.HTTPError as e:
            s.error = f"{type(e).__name__}: {e}"
        with self.lock:
            self.sent.append(s)

    # -- mid-run edits

    def rotate_key(self) -> None:
        new = self.values[ROTATED] + "-rotated"
        path = self.config / "keys.yaml"
        path.write_text(path.read_text().replace(f"key: {self.values[ROTATED]}}}", f"key: {new}}}"))
        with self.lock:
            self.values[ROTATED] = new
        self.events.append(f"{self.elapsed():.0f}s: rotated {ROTATED}")

    def edit_route(self) -> None:
        path = self.config / "routes.yaml"
        text = path.read_text()
        text = text.replace("model: soak-gpt-a-o200k-tps-40\n      weight: 6", "model: soak-gpt-a-o200k-tps-40\n      weight: 4")
        text = text.replace("after: 200ms", "after: 150ms")
        assert text != path.read_text(), "the route edit changed nothing: routes.yaml no longer matches"
        path.write_text(text)
        self.events.append(f"{self.elapsed():.0f}s: edited soak-a weights and soak-b hedging")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # -- the run

    def run(self) -> Result:
        self.start()
        try:
            deadline = time.monotonic() + self.duration
            threads = [threading.Thread(target=self.client, args=(random.Random(self.rng.random()), deadline))
                       for _ in range(self.workers)]
            for t in threads:
                t.start()
            rss: list[list[tuple[float, int]]] = [[] for _ in self.gateways]
            edits = [(0.4 * self.duration, self.rotate_key), (0.5 * self.duration, self.edit_route)]
            while time.monotonic() < deadline:
                for i, gw in enumerate(self.gateways):
                    rss[i].append((self.elapsed(), read_rss(gw.proc.pid)))
                while edits and self.elapsed() >= edits[0][0]:
                    edits.pop(0)[1]()
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            for t in threads:
                t.join(timeout=60)
            for i, gw in enumerate(self.gateways):
                rss[i].append((self.elapsed(), read_rss(gw.proc.pid)))
            settle(lambda: len(self.read_access()))
            time.sleep(1.0)
            prom, source = self.scrape_spend()
            result = Result(
                minutes=self.minutes, keys=self.keys, sent=list(self.sent), access=self.read_access(),
                redis_spend=self.read_redis(), prom_spend=prom, prom_source=source,
                ledger=get_json(self.mock.url + "/mock/ledger"), rss=rss,
                warmup=min(60.0, self.duration / 3), panics=self.panics(), events=self.events,
                redis_outages=self.redis_outages(),
            )
            check(result)
            return result
        finally:
            self.stop()

    # -- reading the ledgers

    def read_access(self) -> list[dict]:
        out = []
        for i, gw in enumerate(self.gateways):
            for line in gw.output().splitlines():
                if '"switchyard::access"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                f = dict(rec.get("fields", {}))
                f["_gw"] = i
                f["_ts"] = parse_ts(rec.get("timestamp"))
                out.append(f)
        return out

    def read_redis(self) -> dict[str, float]:
        month = time.strftime("m%Y-%m", time.gmtime())
        out = {}
        for k in self.keys:
            period = "total" if k.budget is not None else month
            v = self.redis.cmd("GET", f"swy:{{k:{NS}/{k.name}}}:spend:{period}")
            out[k.name] = float(v) if v else 0.0
        return out

    def scrape_spend(self) -> tuple[dict[str, float] | None, str]:
        """`switchyard_spend_usd_total` per team, summed over routes and both gateways, from
        the admin address a gateway logs at start when it has one, else the client port."""
        totals: dict[str, float] = defaultdict(float)
        sources = []
        for gw in self.gateways:
            text, url = None, None
            for url in metrics_urls(gw):
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        if r.status == 200:
                            text = r.read().decode()
                            break
                except Exception:
                    continue
            if text is None:
                return None, "no /metrics answered"
            sources.append(url)
            for m in re.finditer(r'^switchyard_spend_usd_total\{([^}]*)\} (\S+)$', text, re.M):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                totals[labels.get("team", "")] += float(m.group(2))
        return dict(totals), ", ".join(sources)

    def panics(self) -> list[str]:
        return [line for gw in self.gateways for line in gw.output().splitlines() if "panicked" in line]

    def redis_outages(self) -> list[str]:
        """Times a gateway marked Redis down (a call failed or took over 500 ms) and back up."""
        out = []
        for i, gw in enumerate(self.gateways):
            for line in gw.output().splitlines():
                if "redis unreachable" in line or "redis reachable again" in line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    out.append(f"gateway {i} {rec.get('timestamp')}: {rec.get('fields', {}).get('message')}")
        return out


def metrics_urls(gw: Gateway) -> list[str]:
    urls = []
    for m in re.finditer(r'"metrics_addr":"(\d+\.\d+\.\d+\.\d+:\d+)"', gw.output()):
        urls.append(f"http://{m.group(1)}/metrics")
    urls.append(gw.url + "/metrics")
    return urls


def read_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def parse_ts(ts: str | None) -> float:
    if not ts:
        return 0.0
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def settle(measure, timeout: float = 15.0) -> None:
    """Waits until `measure()` stops changing for a second."""
    deadline = time.monotonic() + timeout
    last = measure()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = measure()
        if now == last:
            return
        last = now


# --- The checks -----------------------------------------------------------------------------

# Served by the mock: an answer it started and put tokens of on the wire. A request it answered
# with an error, a stream abandoned before its first token (a hedge's loser) and a whole body cut
# halfway (its usage never arrives; the gateway retries elsewhere) generated nothing billable.
def served(entry: dict) -> bool:
    if entry["outcome"] == "completed":
        return True
    return entry["outcome"] in ("cut", "cancelled") and entry["completion_tokens"] > 0


def check(res: Result) -> None:
    by_key_sent = defaultdict(list)
    key_of = {}
    for s in res.sent:
        by_key_sent[s.key].append(s)
        key_of[s.id] = s.key
    ledger_by_id = defaultdict(list)
    for e in res.ledger:
        ledger_by_id[e.get("id")].append(e)
    log_by_id = defaultdict(list)
    for a in res.access:
        log_by_id[a.get("request_id")].append(a)

    problems = res.problems
    unknown = [e for e in res.ledger if e.get("id") not in key_of]
    if unknown:
        problems.append(f"the mock served {len(unknown)} requests under no id the clients sent, e.g. {unknown[:2]}")
    for s in res.sent:
        n = len(log_by_id.get(s.id, []))
        if n > 1 or (n == 0 and s.status != 0):
            problems.append(f"request {s.id} (status {s.status}) has {n} access log lines")

    for k in res.keys:
        name = f"{NS}/{k.name}"
        sent = by_key_sent[k.name]
        lines = [a for a in res.access if a.get("key") == name]
        log_total = sum(a.get("cost_usd") or 0.0 for a in lines)
        mock_exact = mock_est = log_exact = log_est = 0.0
        off = []  # requests whose usage arrived but were billed other than the mock served
        for s in sent:
            entries = [e for e in ledger_by_id.get(s.id, []) if served(e)]
            # A hedge's loser: the gateway took the other backend's answer and cancelled this
            # one, which the mock may have served some or all of by then. The gateway does not
            # bill it (docs/limits.md); counted apart.
            winners = {BACKEND_MODEL.get(a.get("backend")) for a in log_by_id.get(s.id, [])}
            losers = [e for e in entries if e["model"] not in winners]
            entries = [e for e in entries if e["model"] in winners]
            if losers:
                cls = res.classes.setdefault("hedge losers (not billed)", [0, 0.0, 0.0])
                cls[0] += 1
                cls[2] += sum(cost(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in losers)
            c = sum(cost(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in entries)
            billed = sum(a.get("cost_usd") or 0.0 for a in log_by_id.get(s.id, []))
            # Usage reached the gateway when the mock sent it and the client read to the end
            # (an abandoned stream's usage may still be in flight when the client leaves).
            if s.mode != "abandon" and all(e["usage_sent"] for e in entries):
                mock_exact += c
                log_exact += billed
                kind = "usage arrived"
                if abs(billed - c) > EXACT:
                    off.append(f"{s.id} ({s.mode}, {s.route}, status {s.status}) billed ${billed:.9f}, served "
                               f"${c:.9f}: mock {[(e['model'], e['outcome'], e['prompt_tokens'], e['completion_tokens']) for e in ledger_by_id.get(s.id, [])]}, "
                               f"log {[(a.get('backend'), a.get('status'), a.get('prompt_tokens'), a.get('completion_tokens')) for a in log_by_id.get(s.id, [])]}")
            else:
                mock_est += c
                log_est += billed
                kind = "abandoned by the client" if s.mode == "abandon" else "cut upstream"
            cls = res.classes.setdefault(kind, [0, 0.0, 0.0])
            cls[0] += 1
            cls[1] += billed
            cls[2] += c
        prom = None if res.prom_spend is None else res.prom_spend.get(k.name, 0.0)
        limits = ", ".join(f"{n}={v}" for n, v in (("rpm", k.rpm), ("tpm", k.tpm), ("par", k.parallel),
                                                    ("budget", k.budget)) if v is not None) or "-"
        row = dict(key=k.name, limits=limits, requests=len(sent), ok=sum(s.status == 200 for s in sent),
                   log=log_total, redis=res.redis_spend.get(k.name, 0.0), prom=prom, mock_exact=mock_exact,
                   log_exact=log_exact, mock_est=mock_est, log_est=log_est)
        res.rows.append(row)

        # 1. The three ledgers of the gateway agree.
        if abs(log_total - row["redis"]) > EXACT:
            problems.append(f"{k.name}: access log ${log_total:.9f} != Redis ${row['redis']:.9f}")
        if prom is not None and abs(log_total - prom) > EXACT:
            problems.append(f"{k.name}: access log ${log_total:.9f} != Prometheus ${prom:.9f}")
        # 2. ...and the upstream: exactly where usage arrived, within the estimate elsewhere.
        if abs(log_exact - mock_exact) > EXACT:
            problems.append(f"{k.name}: billed ${log_exact:.9f} for requests whose usage arrived, the mock "
                            f"served ${mock_exact:.9f} ({pct(log_exact, mock_exact)}); e.g. {'; '.join(off[:3])}")
        if abs(log_est - mock_est) > ESTIMATE_TOLERANCE * mock_est + EXACT:
            problems.append(f"{k.name}: billed ${log_est:.9f} for streams that ended without usage, the mock "
                            f"served ${mock_est:.9f} ({pct(log_est, mock_est)}; tolerance "
                            f"{ESTIMATE_TOLERANCE:.0%})")
        # 3. Budgets: over by at most one request's worst cost.
        if k.budget is not None:
            # What the gateway recorded, and what the upstream really served (the gateway
            # cannot stay within budget by under-billing).
            worst = max((worst_cost(s) for s in sent), default=0.0)
            for what, spend in (("recorded", max(log_total, row["redis"])), ("served", mock_exact + mock_est)):
                if spend > k.budget + worst + EXACT:
                    problems.append(f"{k.name}: {what} spend ${spend:.9f} over its ${k.budget} budget by "
                                    f"${spend - k.budget:.9f} ({(spend - k.budget) / k.budget:.1%}), more than "
                                    f"one request's worst cost ${worst:.9f}")
        # 4. rpm across both gateways, in the limiter's one-second buckets.
        if k.rpm is not None:
            spans = admission_spans(lines, ledger_by_id)
            certain, possible = max_in_window(spans)
            res.rpm_windows[k.name] = (certain, possible)
            if certain > k.rpm:
                problems.append(f"{k.name}: {certain} requests admitted within 60 one-second buckets, rpm is {k.rpm}")

    if res.prom_spend is None:
        problems.append(f"Prometheus spend could not be read ({res.prom_source})")
    # 5. No panic, no unexplained 5xx.
    for p in res.panics[:5]:
        problems.append(f"panic: {p[:300]}")
    for s in res.sent:
        if s.status >= 500 or (s.status == 0 and s.error):
            entries = ledger_by_id.get(s.id, [])
            explained = entries and not any(e["outcome"] == "completed" for e in entries)
            # Refused, before any upstream attempt, while its gateway had Redis marked down
            # (failMode closed: a key's limits or a Provider's quota could not be checked).
            explained = explained or any(
                a.get("status") == 503 and not a.get("attempts") and down_during(res.redis_outages, a)
                for a in log_by_id.get(s.id, []))
            if not explained:
                problems.append(f"unexplained failure of {s.id} ({s.mode}, {s.route}): status {s.status} "
                                f"{s.error}; mock: {[(e['model'], e['outcome']) for e in entries]}")
    # 6. RSS flat after warm-up.
    for i, series in enumerate(res.rss):
        after = [kb for t, kb in series if t >= res.warmup and kb > 0]
        if len(after) >= 2 and after[-1] > after[0] * 1.10:
            problems.append(f"gateway {i}: RSS grew {after[0]} kB -> {after[-1]} kB "
                            f"({after[-1] / after[0] - 1:.1%}) after warm-up")
    if not res.sent or not any(s.status == 200 for s in res.sent):
        problems.append("no request succeeded: the soak did not run")


def down_during(outages: list[str], a: dict) -> bool:
    """Whether the gateway of access-log line `a` had Redis marked down while it served it."""
    start, end = a["_ts"] - a.get("latency_ms", 0) / 1000, a["_ts"]
    down = None
    for o in outages:
        m = re.match(r"gateway (\d+) (\S+): (.*)", o)
        if not m or int(m.group(1)) != a["_gw"]:
            continue
        t = parse_ts(m.group(2))
        if "unreachable" in m.group(3):
            down = t
        elif down is not None:
            if down <= end and start <= t:
                return True
            down = None
    return down is not None and down <= end


def pct(billed: float, truth: float) -> str:
    return f"{billed / truth:.1%} of it" if truth else "nothing served"


def worst_cost(s: Sent) -> float:
    """The most one request can cost: its prompt and `max_tokens` at the dearest price of any
    backend it may reach (fallbacks included). The mock's replies stay under MAX_TOKENS."""
    dearest = max(max(PRICES[m]) for r in REACHABLE[s.route] for m in ROUTE_MODELS[r])
    # Prompt: at most 3 tokens a word, and 4 a message and 3 (the larger of the mock's and the
    # gateway's overheads).
    return (3 * s.prompt_words + 7 + MAX_TOKENS) * dearest / 1e6


def admission_spans(lines: list[dict], ledger_by_id: dict) -> list[tuple[int, int]]:
    """The seconds within which each request that reached an upstream was admitted: after the
    gateway received it (its access-log time minus its latency) and before the mock received its
    first attempt (the ledger's `received_ms`; same machine, same clock as Redis' `TIME`, which
    places the limiter's buckets). The start alone is not enough: a request received at x.998 s
    may be admitted in second x+1, and counting it in second x once made a full rpm-46 window
    look like 47."""
    spans = []
    for a in lines:
        if (a.get("attempts") or 0) == 0:
            continue
        lo = a["_ts"] - a.get("latency_ms", 0) / 1000
        arrivals = [e["received_ms"] / 1000 for e in ledger_by_id.get(a.get("request_id"), []) if e.get("received_ms")]
        hi = min(arrivals) if arrivals else a["_ts"]
        spans.append((int(lo), int(max(lo, hi))))
    return spans


def max_in_window(spans: list[tuple[int, int]]) -> tuple[int, int]:
    """The most admissions any 60 consecutive one-second buckets certainly held (both ends of
    the span inside), and the most they could have held (either end inside)."""
    certain = possible = 0
    for start in sorted({lo for lo, _ in spans} | {hi - 59 for _, hi in spans}):
        end = start + 59
        certain = max(certain, sum(1 for lo, hi in spans if lo >= start and hi <= end))
        possible = max(possible, sum(1 for lo, hi in spans if hi >= start and lo <= end))
    return certain, possible


# --- Report ---------------------------------------------------------------------------------


def report(res: Result) -> str:
    statuses = defaultdict(int)
    modes = defaultdict(int)
    for s in res.sent:
        statuses[s.status] += 1
        modes[s.mode] += 1
    outcomes = defaultdict(int)
    for e in res.ledger:
        outcomes[(e["outcome"], e["stream"])] += 1
    rss = "; ".join(
        f"gateway {i}: " + " -> ".join(f"{kb // 1024} MB@{t:.0f}s" for t, kb in series[:: max(1, len(series) // 6)])
        for i, series in enumerate(res.rss)
    )
    out = [
        f"# Soak: {res.minutes:g} minute(s)",
        "",
        f"Requests: {len(res.sent)} ({dict(modes)}); client statuses {dict(sorted(statuses.items()))}.",
        "Mock (upstream requests by outcome): "
        + ", ".join(f"{o} {'stream' if st else 'whole'}: {n}" for (o, st), n in sorted(outcomes.items())) + ".",
        f"Prometheus from: {res.prom_source}. Events: {'; '.join(res.events)}. RSS: {rss}.",
        f"Redis marked down (a call failed or took over 500 ms; failMode closed refuses limited keys "
        f"meanwhile): {'; '.join(res.redis_outages) or 'never'}.",
        "",
        "$ columns in USD. *mock*: what the mock served (tokens it wrote), priced; *exact*: requests "
        "whose usage reached the gateway; *estimated*: streams that ended without it (abandoned by the "
        "client or cut upstream). delta = log - mock served.",
        "",
        res.table(),
        "",
        "| requests | count | billed $ | mock served $ | billed / served |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {kind} | {n} | {b:.9f} | {c:.9f} | {b / c:.1%} |" if c else f"| {kind} | {n} | {b:.9f} | 0 | - |"
            for kind, (n, b, c) in sorted(res.classes.items())]
    if res.rpm_windows:
        out += ["", "rpm: the most requests admitted in 60 one-second buckets (certain; possible, placing "
                "each request's admission anywhere between its arrival at the gateway and at the mock): "
                + ", ".join(f"{k} {c}/{p} (rpm {next(x.rpm for x in res.keys if x.name == k)})"
                            for k, (c, p) in sorted(res.rpm_windows.items())) + "."]
    out += [
        "",
        f"## Checks: {'all pass' if not res.problems else f'{len(res.problems)} failures'}",
        "",
    ]
    out += [f"- {p}" for p in res.problems]
    return "\n".join(out) + "\n"


def run(minutes: float, workdir: Path | None = None, workers: int = 12) -> Result:
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="switchyard-soak-"))
    return Soak(minutes, workdir, workers=workers).run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    args = ap.parse_args()
    res = run(args.minutes, workers=args.workers)
    text = report(res)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 1 if res.problems else 0


if __name__ == "__main__":
    sys.exit(main())
