"""`make bench-serve`: the embedded model server against the in-process signature.

Not part of the tests. In one run, on this machine:
  1. in-process: the SavedModel's serving signature for 1 and 100 images (median latency),
     and the batched ceiling (images/s calling it with large batches back to back);
  2. over loopback: the server (``python -m local_runners.model_server`` in its own process)
     driven by a lean keep-alive HTTP/1.1 load generator (``local_runners/http_load.py``, raw
     asyncio protocols on uvloop, so it takes little of the CPU it shares with the server)
     for a bounded time at concurrency 1, 8 and
     32, with 1-image and 100-image requests: req/s, images/s, p50/p99 latency, errors.
Every measured answer is checked against the in-process signature's (errors.bad_answers).
Goals (issue 5, 2 cores): 1-image p50 <= 3x in-process; 100-image p50 <= 4x in-process;
1-image throughput at concurrency 32 >= 50% of the batched ceiling. Prints the ratios and
writes bench/serve_results.json. Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from local_runners.http_load import run_load

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "mnist"


def export_model(directory: Path) -> Path:
    """The project's served network (untrained weights: only timing matters here)."""
    from model.network import build_classifier, export_saved_model
    export_saved_model(build_classifier(28, 28, 10), directory, version=1)
    return directory


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench_in_process(model_dir: Path, seconds: float) -> dict:
    from local_runners.serve_model import LoadedModel
    sig = LoadedModel(model_dir).signatures["serving_default"]
    one, hundred = {"pixels": images(1)}, {"pixels": images(100)}
    for _ in range(20):
        sig(one), sig(hundred)
    out = {"latency_1_ms": _median_ms(lambda: sig(one), 300),
           "latency_100_ms": _median_ms(lambda: sig(hundred), 60)}
    ceiling = {}
    for batch in (32, 128):
        x = {"pixels": images(batch)}
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            sig(x)
            n += batch
        ceiling[batch] = n / (time.perf_counter() - start)
    out["batched_ceiling_images_per_s"] = max(ceiling.values())
    out["ceiling_by_batch"] = {str(k): round(v) for k, v in ceiling.items()}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "local_runners.model_server",
                             "--model-dir", str(model_dir), "--model-name", MODEL_NAME,
                             "--host", "127.0.0.1", "--port", str(port), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "serving model" not in line:
        proc.kill()
        raise SystemExit(f"the model server did not start: {line!r}")
    return proc


def answer_checker(model_dir: Path, x: np.ndarray):
    """check(status, body) for the load generator: every answer must equal the in-process
    signature's for ``x`` (within float tolerance; batching may change the last bits)."""
    from local_runners.serve_model import LoadedModel
    want = LoadedModel(model_dir).signatures["serving_default"]({"pixels": x})
    seen: set[bytes] = set()       # bodies already verified (a byte-equal answer is right too)

    def check(status: int, body: bytes) -> bool:
        if body in seen:
            return True
        try:
            rows = orjson.loads(body)["predictions"]
            got = np.array([r["probabilities"] for r in rows])
            ok = (len(rows) == len(x) and [r["classes"] for r in rows] == want["classes"].tolist()
                  and np.allclose(got, want["probabilities"], rtol=1e-4, atol=1e-6))
        except (KeyError, TypeError, ValueError):
            return False
        if ok and len(seen) < 64:
            seen.add(body)
        return ok
    return check


def check_answer(url: str, x: np.ndarray, model_dir: Path) -> None:
    """The served answer equals the in-process one (a fast server that is wrong is no use)."""
    import urllib.request
    from local_runners.serve_model import LoadedModel
    req = urllib.request.Request(url, data=orjson.dumps({"instances": x},
                                                        option=orjson.OPT_SERIALIZE_NUMPY),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        got = np.array([r["probabilities"] for r in orjson.loads(resp.read())["predictions"]])
    want = LoadedModel(model_dir).signatures["serving_default"]({"pixels": x})["probabilities"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path,
                    help="a model dir holding <version>/saved_model.pb (default: export the "
                    "project's network, untrained, to a temporary dir)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured time per load level")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--server-args", default="",
                    help="extra model_server flags, e.g. '--max-batch-size 0'")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "serve_results.json")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_model(Path(tmp) / "model")
        print("in-process signature ...", flush=True)
        inproc = bench_in_process(model_dir, min(args.seconds, 3.0))
        port = free_port()
        proc = start_server(model_dir, port, args.server_args.split())
        path = f"/v1/models/{MODEL_NAME}:predict"
        url = f"http://127.0.0.1:{port}{path}"
        results: dict = {}
        try:
            check_answer(url, images(5, seed=9), model_dir)
            for n in (1, 100):
                body = orjson.dumps({"instances": images(n, seed=n)},
                                    option=orjson.OPT_SERIALIZE_NUMPY)
                check = answer_checker(model_dir, images(n, seed=n))
                for c in levels:
                    r = run_load("127.0.0.1", port, path, body, c, seconds=args.seconds,
                                 warmup=args.warmup, check=check).summary()
                    r["images_per_s"] = r["req_per_s"] * n
                    results[f"{n}x{c}"] = r
                    print(f"  {n:>3} image(s)  concurrency {c:>2}: {r['req_per_s']:8.0f} req/s "
                          f"{r['images_per_s']:9.0f} img/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)

    ratios = {
        "p50_1_image_over_in_process (goal <= 3)":
            results["1x1"]["p50_ms"] / inproc["latency_1_ms"] if "1x1" in results else None,
        "p50_100_images_over_in_process (goal <= 4)":
            results["100x1"]["p50_ms"] / inproc["latency_100_ms"] if "100x1" in results else None,
        "c32_1_image_throughput_over_ceiling (goal >= 0.5)":
            results["1x32"]["images_per_s"] / inproc["batched_ceiling_images_per_s"]
            if "1x32" in results else None,
    }
    print(f"in-process: 1 image {inproc['latency_1_ms']:.2f} ms, 100 images "
          f"{inproc['latency_100_ms']:.2f} ms, batched ceiling "
          f"{inproc['batched_ceiling_images_per_s']:.0f} images/s")
    for k, v in ratios.items():
        print(f"  {k}: {'n/a' if v is None else f'{v:.2f}'}")
    doc = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "server_args": args.server_args, "seconds_per_level": args.seconds,
           "in_process": inproc, "loopback": results, "ratios": ratios}
    args.out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
