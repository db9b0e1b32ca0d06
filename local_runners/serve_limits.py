"""How much the embedded model server gives any one client: time, connections, nesting.

``ServeLimits`` holds them, checked on construction (``ConfigError`` naming the limit):

- ``header_timeout``   seconds from the first byte of a request to the end of its headers;
  a client that stalls in between gets 408 and the connection is closed;
- ``body_timeout``     seconds to receive a whole request body once its headers are in
  (a ``Content-Length`` larger than what is sent, a client that stops): 408, then close;
- ``idle_timeout``     seconds a connection may wait for its first or next request; then
  it is closed without an answer (no request was started). A client that reads nothing of
  an answer for one to two such periods is dropped too (the answer would stay in memory);
- ``max_connections``  connections open at once; beyond it a new connection is answered
  503 and closed at once, so a storm of idle sockets cannot take the memory of the process;
- ``max_json_depth``   deepest nesting of arrays and objects accepted in a JSON body,
  checked before parsing (400 naming the limit): nothing recurses on client input.

The defaults suit a local server with well-behaved clients and still bound hostile ones;
tests shrink the timeouts to fractions of a second. ``check_server_args`` checks the other
``ModelServer`` arguments the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.option_checks import check_host, check_model_name, check_number, check_port
from local_runners.serve_codec import DEFAULT_MAX_JSON_DEPTH

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1024
MAX_JSON_DEPTH = 512             # above this even the standard json module could recurse deep


@dataclass(frozen=True)
class ServeLimits:
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            check_number(getattr(self, name), name, above=0, maximum=86400, unit="seconds")
        check_number(self.max_connections, "max_connections", minimum=1, maximum=1_000_000,
                     integer=True)
        check_number(self.max_json_depth, "max_json_depth", minimum=2, maximum=MAX_JSON_DEPTH,
                     integer=True, note='{"instances": [[...]]} is 3 deep')


def check_server_args(*, model_name: Any, host: Any, port: Any, max_body_bytes: Any,
                      workers: Any, max_batch_size: Any, batch_timeout_micros: Any,
                      num_batch_threads: Any, version_poll_seconds: Any,
                      shutdown_timeout: Any, limits: Any, check_input_range: Any) -> None:
    """The arguments of ``ModelServer``; raises ``ConfigError`` for the first wrong one."""
    check_model_name(model_name, "model_name")
    check_host(host, "host")
    check_port(port, "port")
    check_number(max_body_bytes, "max_body_bytes", minimum=1, integer=True, unit="bytes")
    check_number(workers, "workers", minimum=1, maximum=1024, integer=True)
    check_number(max_batch_size, "max_batch_size", minimum=0, integer=True,
                 unset="batching off", note="0 turns batching off too")
    check_number(batch_timeout_micros, "batch_timeout_micros", minimum=0, integer=True)
    check_number(num_batch_threads, "num_batch_threads", minimum=1, maximum=1024, integer=True)
    check_number(version_poll_seconds, "version_poll_seconds", minimum=0.01, maximum=86400,
                 unit="seconds", unset="only reload() looks for new versions")
    check_number(shutdown_timeout, "shutdown_timeout", minimum=0, maximum=86400, unit="seconds")
    if not isinstance(limits, ServeLimits):
        raise ConfigError("limits is not a ServeLimits", field="limits",
                          expected="local_runners.serve_limits.ServeLimits(...)", got=limits)
    if not isinstance(check_input_range, bool):
        raise ConfigError("check_input_range is not a boolean", field="check_input_range",
                          expected="True or False", got=check_input_range)
