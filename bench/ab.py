#!/usr/bin/env python3
"""Before/after: two gateway builds (or one build with different environments) on the same
mock upstream, driven in interleaved rounds by `switchyard bench load`, with the gateway's CPU
time per request from /proc. Used for the profiling fixes reported in bench/results.

    bench/ab.py --a OLD_BIN --b NEW_BIN [--b-env _RJEM_MALLOC_CONF=dirty_decay_ms:0]
                [--rounds 3] [--duration 4] [--bench BIN] [--streams 1000] [--no-load]
                [--http-version http2]

--streams N first holds N open streams (`mock-slow-5s`) on each gateway while it is still fresh
and reports its peak RSS (the issue-18 memory target, for allocators or builds side by side);
--no-load skips the load cases after it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="the 'before' switchyard binary")
    ap.add_argument("--b", required=True, help="the 'after' switchyard binary")
    ap.add_argument("--a-env", action="append", default=[], help="NAME=VALUE for the 'before' gateway")
    ap.add_argument("--b-env", action="append", default=[], help="NAME=VALUE for the 'after' gateway")
    ap.add_argument("--bench", help="binary running the load generator and the mock (default: --b)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--streams", type=int, default=0, help="open streams held on each fresh gateway (RSS)")
    ap.add_argument("--no-load", action="store_true", help="only the --streams measurement")
    ap.add_argument("--http-version", default="auto",
                    help="the providers' httpVersion (`http2`: h2c to the mock, as bench/run.sh's h2c case)")
    a = ap.parse_args()
    tool = a.bench or a.b
    bench = run.Bench(tool)
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-ab-"))
    procs = []
    try:
        p_up = run.free_port()
        mock = run.Proc("mock", [tool, "mock-provider", "--listen", f"127.0.0.1:{p_up}"], tmp, env={"SWITCHYARD_LOG": "warn"})
        procs.append(mock)
        run.wait_http(f"http://127.0.0.1:{p_up}/healthz", mock.proc, 15)
        cfg = tmp / "cfg"
        run.switchyard_config(cfg, p_up, a.http_version)
        gws = {}
        for name, bin, envs in (("before", a.a, a.a_env), ("after", a.b, a.b_env)):
            port = run.free_port()
            env = {"SWITCHYARD_LOG": "warn", **dict(e.split("=", 1) for e in envs)}
            p = run.Proc(name, [bin, "gateway", "--config", str(cfg), "--listen", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0"], tmp, env=env)
            procs.append(p)
            run.wait_http(f"http://127.0.0.1:{port}/readyz", p.proc, 30)
            gws[name] = (port, p.pid)
        print(f"machine load: {run.machine_load()['load1']:.2f}", flush=True)
        for name in ("before", "after") if a.streams else ():
            port, pid = gws[name]
            idle = run.status_kib(pid, "VmRSS")
            r = bench.run("streams", "--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--key", run.KEY,
                          "--model", "bench-hold", "--stream", "--count", str(a.streams), "--pid", str(pid),
                          "--limit", "60", timeout=120)
            print(f"  {name:7} {r['opened']}/{a.streams} streams open: RSS idle {idle / 1024:.1f} MiB, "
                  f"peak {r['rss_peak_kib'] / 1024:.1f} MiB", flush=True)
        cases = [] if a.no_load else [("c=1", {"concurrency": 1}), ("c=16", {"concurrency": 16}), ("c=64", {"concurrency": 64}),
                 ("stream c=16", {"concurrency": 16, "stream": True}),
                 ("rate 1000/s", {"concurrency": 64, "rate": 1000})]
        res = {}
        for label, kw in cases:
            for rnd in range(a.rounds):
                order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
                for name in order:
                    port, pid = gws[name]
                    cpu0 = run.cpu_seconds(pid)
                    r = bench.load(f"http://127.0.0.1:{port}/v1/chat/completions", "bench", duration=a.duration,
                                   warmup=1.0, **kw)
                    r["cpu_us_per_req"] = (run.cpu_seconds(pid) - cpu0) / max(r["ok"], 1) * 1e6
                    res.setdefault((label, name), []).append(r)
            print(label, flush=True)
            for name in ("before", "after"):
                rs = res[(label, name)]
                m = lambda *p: statistics.median([_get(r, p) for r in rs])
                ttft = f"  ttft p50 {m('ttft_us', 'p50'):.0f} p99 {m('ttft_us', 'p99'):.0f}" if kw.get("stream") else ""
                print(f"  {name:7} {m('rps'):8.0f} rps  p50 {m('latency_us', 'p50'):7.0f} µs  p99 {m('latency_us', 'p99'):7.0f} µs"
                      f"  gateway CPU {m('cpu_us_per_req'):5.1f} µs/req{ttft}", flush=True)
        rss = {n: run.status_kib(pid, "VmHWM") for n, (_, pid) in gws.items()}
        print("peak RSS: " + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in rss.items()))
        print(f"machine load: {run.machine_load()['load1']:.2f}", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()
    return 0


def _get(r, path):
    for p in path:
        r = r[p]
    return r


if __name__ == "__main__":
    sys.exit(main())
