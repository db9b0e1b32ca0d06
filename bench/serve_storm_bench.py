"""`make bench-storm`: the embedded model server's memory under a storm of connections.

Not part of the tests (tests/local_runners/test_serve_hardening.py has a 150-connection
version). The hostile pass that found the defect opened 19,950 idle connections: the server
grew to 2.9 GB and kept it after they closed. Here, for each scenario, one server runs in a
child process (its RSS measured with psutil) and this process:

  1. sends 50 valid requests (warm-up), measures the baseline RSS;
  2. opens N connections (default: as many as the file limit allows, up to 19,950), each
     sending the same bytes (``--mode``: nothing, half a request line, or headers plus
     half of a body), and measures the RSS at the peak;
  3. closes them all, waits until the server has released every connection and a few
     seconds more, measures the RSS after the storm and the latency of one valid request.

Scenarios (``--scenarios``):
  unbounded   the server as it was: no connection cap, hour-long timeouts, memory not
              released after the storm;
  no-trim     the connection cap (1024), memory not released;
  hardened    the defaults: cap 1024, memory released once the connections have drained
              (gc.collect + malloc_trim, ``ConnectionGuard.release_memory``);
  trim-only   no cap, memory released (what releasing alone gives back).
"Not released" is obtained by removing the guard's ``release_memory`` in the child: the
bench measures what that one call is worth. Timeouts are an hour in every scenario, so the
clients, not the server, end the connections. Writes bench/serve_storm_results.json. Only
127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import resource
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MODEL = "mnist"
BODY = json.dumps({"instances": [[0.5] * 784]}).encode()
MODES = {
    "idle": b"",
    "request-line": b"POST /invocations HT",
    "half-body": (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b'{"instances": [[' + b"0.5, " * 400),
}
SCENARIOS = {
    # name: (max_connections, timeouts in seconds, trim)
    "unbounded": (1_000_000, 3600.0, False),
    "no-trim": (1024, 3600.0, False),
    "hardened": (1024, 3600.0, True),
    "trim-only": (1_000_000, 3600.0, True),
}


def _raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def serve_child(model_dir: str, max_connections: int, timeout: float, trim: bool, pipe) -> None:
    """The server, in its own process; answers "stats" on ``pipe`` until "stop"."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    _raise_file_limit()
    from local_runners.model_server import ModelServer
    from local_runners.serve_limits import ServeLimits
    limits = ServeLimits(header_timeout=timeout, body_timeout=timeout, idle_timeout=timeout,
                         max_connections=max_connections)
    srv = ModelServer(model_dir, MODEL, limits=limits).start()
    if not trim:
        srv.connections.release_memory = None   # measure what releasing is worth
    pipe.send(srv.port)
    while True:
        if pipe.recv() == "stop":
            break
        c = srv.connections
        pipe.send({"open": c.open, "peak": c.peak, "refused": c.refused, "trims": c.trims})
    srv.stop()
    pipe.send("stopped")


def export_model(directory: Path) -> Path:
    from model.network import build_classifier, export_saved_model
    export_saved_model(build_classifier(28, 28, 10), directory, version=1)
    return directory


def predict(port: int) -> dict:
    """One valid request: its status (503 while the connections are all taken) and time."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=BODY,
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    return {"status": status, "ms": round(1000 * (time.perf_counter() - t), 2)}


def mb(n: int) -> float:
    return round(n / 2**20, 1)


def run_scenario(name: str, model_dir: Path, n: int, payload: bytes, settle: float) -> dict:
    max_connections, timeout, trim = SCENARIOS[name]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_child, args=(str(model_dir), max_connections, timeout,
                                                 trim, child), daemon=True)
    proc.start()
    port = parent.recv()
    server = psutil.Process(proc.pid)

    def stats() -> dict:
        parent.send("stats")
        return parent.recv()

    for _ in range(50):
        assert predict(port)["status"] == 200
    time.sleep(1.0)
    base = server.memory_info().rss
    socks, failed, started = [], 0, time.perf_counter()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(True)
        try:
            s.connect(("127.0.0.1", port))
            if payload:
                s.sendall(payload)
        except OSError:
            failed += 1
            s.close()
            continue
        socks.append(s)
    opened_s = time.perf_counter() - started
    time.sleep(2.0)                      # let the server accept and read everything
    during = stats()
    peak = server.memory_info().rss
    during_storm = predict(port)
    for s in socks:
        s.close()
    deadline = time.monotonic() + 120
    while stats()["open"] > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(settle)
    after_stats = stats()
    after = server.memory_info().rss
    after_storm = predict(port)
    parent.send("stop")
    parent.recv()
    proc.join(30)
    return {"scenario": name, "max_connections": max_connections, "trim": trim,
            "connections_attempted": n, "client_connect_failures": failed,
            "seconds_to_open": round(opened_s, 2), "served_at_peak": during["open"],
            "refused_503": during["refused"], "trims": after_stats["trims"],
            "rss_mb": {"baseline": mb(base), "peak": mb(peak), "after": mb(after)},
            "kb_per_served_connection": round((peak - base) / 1024 / max(1, during["open"]), 1),
            "retained_after_mb": mb(after - base),
            "predict": {"during_storm": during_storm, "after_storm": after_storm}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve_storm_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    hard = _raise_file_limit()
    ap.add_argument("--connections", type=int, default=min(19_950, hard - 300))
    ap.add_argument("--mode", choices=sorted(MODES), default="half-body")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--settle", type=float, default=4.0,
                    help="seconds to wait after the last connection is released")
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "serve_storm_results.json")
    args = ap.parse_args(argv)
    if args.connections > hard - 100:
        ap.error(f"--connections {args.connections}: the file limit is {hard}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_model(Path(tmp) / "model")
        for name in args.scenarios.split(","):
            r = run_scenario(name, model_dir, args.connections, MODES[args.mode], args.settle)
            results.append(r)
            rss = r["rss_mb"]
            print(f"{name:>10}: {r['served_at_peak']:>6} served, {r['refused_503']:>6} refused;"
                  f" RSS {rss['baseline']:7.1f} -> peak {rss['peak']:7.1f} -> after "
                  f"{rss['after']:7.1f} MB ({r['kb_per_served_connection']} KB/connection, "
                  f"{r['retained_after_mb']} MB kept); predict during "
                  f"{r['predict']['during_storm']['status']}, after "
                  f"{r['predict']['after_storm']['status']}", flush=True)
    doc = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "file_limit": hard},
           "mode": args.mode, "payload_bytes": len(MODES[args.mode]), "results": results}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
