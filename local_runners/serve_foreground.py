"""``python -m local_runners.model_server``: the embedded model server in the foreground.

Serves until SIGTERM (docker stop, SageMaker) or Ctrl+C, which stop it gracefully: the
listener closes, requests in flight are answered (up to ``--shutdown-timeout``), then the
process exits 0. The server itself is ``local_runners.model_server.ModelServer``; a wrong
option (``--port 70000``, ``--poll-seconds -1``) is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from harness.errors import HarnessError
from harness.option_checks import check_number, check_percent
from local_runners.model_server import (
    DEFAULT_BATCH_TIMEOUT_MICROS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SHUTDOWN_TIMEOUT,
    ModelServer,
)
from local_runners.serve_capture import DataCapture
from local_runners.serve_limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_JSON_DEPTH,
    ServeLimits,
)

log = logging.getLogger("local_runners.model_server")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m local_runners.model_server",
                                 description="Serve a SavedModel with the TF Serving REST API "
                                 "and the SageMaker /ping, /invocations contract.")
    ap.add_argument("--model-dir", required=True,
                    help="directory holding <version>/saved_model.pb (and optional code/)")
    ap.add_argument("--model-name", default="model", help="name in /v1/models/<name>")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20)
    ap.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                    help="most instances merged into one model call; 0 turns batching off")
    ap.add_argument("--batch-timeout-micros", type=int, default=DEFAULT_BATCH_TIMEOUT_MICROS,
                    help="longest wait for more requests while others are being received")
    ap.add_argument("--shutdown-timeout", type=float, default=DEFAULT_SHUTDOWN_TIMEOUT,
                    help="on SIGTERM/Ctrl+C, seconds requests in flight get to finish")
    ap.add_argument("--poll-seconds", type=float, default=None,
                    help="poll the model dir for a newer <version>/ this often")
    ap.add_argument("--intra-op-threads", type=int, default=0,
                    help="threads one TF op may use (TF Serving's "
                    "--tensorflow_intra_op_parallelism); 0: TensorFlow's default")
    ap.add_argument("--inter-op-threads", type=int, default=0,
                    help="TF ops run at the same time (--tensorflow_inter_op_parallelism); "
                    "0: TensorFlow's default")
    ap.add_argument("--capture-dir", help="write data capture JSON Lines under this directory")
    ap.add_argument("--capture-percent", type=float, default=100.0)
    ap.add_argument("--endpoint-name", default=None,
                    help="endpoint name in the capture path (default: the model name)")
    ap.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                    help="connections open at once; more are answered 503")
    ap.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                    help="seconds for a request's headers once it has started (408 after)")
    ap.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                    help="seconds to receive a request body (408 after)")
    ap.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
                    help="seconds a connection may wait for its next request before closing")
    ap.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_JSON_DEPTH,
                    help="deepest nesting of arrays/objects accepted in a JSON body")
    ap.add_argument("--no-input-range-check", dest="check_input_range", action="store_false",
                    help="accept inputs outside the range the model declares "
                    "(<version>/assets.extra/input_ranges.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.intra_op_threads or args.inter_op_threads:
        import tensorflow as tf   # before the model loads: TF fixes its pools on first use
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    try:
        check_number(args.max_body_mb, "--max-body-mb", above=0)
        check_percent(args.capture_percent, "--capture-percent")
        limits = ServeLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                             idle_timeout=args.idle_timeout,
                             max_connections=args.max_connections,
                             max_json_depth=args.max_json_depth)
        capture = (DataCapture(args.capture_dir, args.endpoint_name or args.model_name,
                               sampling_percentage=args.capture_percent)
                   if args.capture_dir else None)
        server = ModelServer(args.model_dir, args.model_name, args.host, args.port,
                             max_body_bytes=int(args.max_body_mb * 2**20),
                             max_batch_size=args.max_batch_size or None,
                             batch_timeout_micros=args.batch_timeout_micros,
                             version_poll_seconds=args.poll_seconds, data_capture=capture,
                             shutdown_timeout=args.shutdown_timeout, limits=limits,
                             check_input_range=args.check_input_range)
        server.start()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    done = threading.Event()
    # SIGTERM (docker stop, SageMaker) and Ctrl+C both stop gracefully: requests in flight
    # are answered (up to --shutdown-timeout) before the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"serving model '{args.model_name}' version {server.model.version} at {server.url} "
          f"(Ctrl+C to stop)", flush=True)
    try:
        while not done.wait(0.5):
            pass
        log.info("stopping: no new connections; finishing requests in flight")
    finally:
        server.stop()
    return 0

