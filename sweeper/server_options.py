"""tritonserver's command-line options as knobs (``search_space.server``), checked against the
options Triton 2.51 accepts (``tritonserver --help`` of the nvidia-pytriton wheel's 2.51.0).

A leaf module: the spec checks a space with it, the launchers turn a trial's options into argv.
"""

from __future__ import annotations

import difflib
from typing import Any

# Options that decide performance, by the type of their value.
_TUNABLE: dict[str, type] = {
    "backend-config": str,
    "buffer-manager-thread-count": int,
    "cache-config": str,
    "cuda-memory-pool-byte-size": str,
    "cuda-virtual-address-size": str,
    "enable-peer-access": bool,
    "exit-timeout-secs": int,
    "grpc-http2-max-ping-strikes": int,
    "grpc-http2-max-pings-without-data": int,
    "grpc-http2-min-recv-ping-interval-without-data": int,
    "grpc-infer-allocation-pool-size": int,
    "grpc-infer-response-compression-level": str,
    "grpc-keepalive-permit-without-calls": bool,
    "grpc-keepalive-time": int,
    "grpc-keepalive-timeout": int,
    "grpc-max-connection-age": int,
    "grpc-max-connection-age-grace": int,
    "host-policy": str,
    "http-thread-count": int,
    "log-verbose": int,
    "metrics-interval-ms": int,
    "min-supported-compute-capability": float,
    "model-load-gpu-limit": str,
    "model-load-thread-count": int,
    "pinned-memory-pool-byte-size": int,
    "rate-limit": str,
    "rate-limit-resource": str,
    "response-cache-byte-size": int,
}

# Options the sweeper sets itself, or that would stop it measuring: where each is decided.
_RESERVED = {
    "model-repository": "the sweeper (each trial's repository)",
    "model-store": "the sweeper (each trial's repository)",
    "model-control-mode": "server.reuse",
    "load-model": "server.reuse",
    "backend-directory": "server.backend_directory",
    "disable-auto-complete-config": "the sweeper",
    "strict-model-config": "the sweeper",
    "model-config-name": "the sweeper (it writes config.pbtxt)",
    "log-file": "the sweeper (it reads the server's log)",
    "exit-on-error": "the sweeper",
    "strict-readiness": "the sweeper",
    "id": "the sweeper",
    "help": "nobody",
    "model-namespacing": "the sweeper",
    "repository-poll-secs": "the sweeper",
    "model-load-retry-count": "the sweeper",
    "repoagent-directory": "the model folder",
    "cache-directory": "the server's installation",
    "log-format": "the sweeper (it reads the server's log)",
    "log-info": "the sweeper (it reads the server's log)",
    "log-warning": "the sweeper (it reads the server's log)",
    "log-error": "the sweeper (it reads the server's log)",
}
for _service in ("http", "grpc", "metrics", "sagemaker", "vertex-ai"):
    _RESERVED[f"{_service}-port"] = _RESERVED[f"{_service}-address"] = "the launcher (free ports on server.address)"
    _RESERVED[f"allow-{_service}"] = "the sweeper (it needs HTTP, gRPC and metrics)"
_RESERVED.update(
    {
        "allow-cpu-metrics": "the sweeper (it reads the metrics)",
        "allow-gpu-metrics": "the sweeper (it reads the metrics)",
        "metrics-config": "the sweeper (it reads the metrics)",
        "reuse-grpc-port": "the launcher",
        "reuse-http-port": "the launcher",
        "grpc-use-ssl": "the launcher (the load generator connects without TLS)",
        "grpc-use-ssl-mutual": "the launcher (the load generator connects without TLS)",
        "grpc-root-cert": "the launcher (the load generator connects without TLS)",
        "grpc-server-cert": "the launcher (the load generator connects without TLS)",
        "grpc-server-key": "the launcher (the load generator connects without TLS)",
        "grpc-restricted-protocol": "the launcher (the load generator needs every protocol)",
        "http-restricted-api": "the launcher (the load generator needs every API)",
        "grpc-header-forward-pattern": "the load generator",
        "http-header-forward-pattern": "the load generator",
        "sagemaker-safe-port-range": "the launcher",
        "sagemaker-thread-count": "nobody (SageMaker is off)",
        "vertex-ai-thread-count": "nobody (Vertex AI is off)",
        "vertex-ai-default-model": "nobody (Vertex AI is off)",
        "trace-config": "nobody (tracing is no performance knob)",
        "trace-file": "nobody (tracing is no performance knob)",
        "trace-level": "nobody (tracing is no performance knob)",
        "trace-rate": "nobody (tracing is no performance knob)",
        "trace-count": "nobody (tracing is no performance knob)",
        "trace-log-frequency": "nobody (tracing is no performance knob)",
    }
)

# The values an integer option means something at (default: 0 to INT32_MAX); sizes in bytes are
# 64-bit, the counts of threads at least 1.
_INT32_MAX = 2**31 - 1
_INT_RANGES = {
    "http-thread-count": (1, 4096),
    "model-load-thread-count": (1, 4096),
    "buffer-manager-thread-count": (0, 4096),
    "grpc-infer-allocation-pool-size": (0, _INT32_MAX),
    "log-verbose": (0, 10),
    "pinned-memory-pool-byte-size": (0, 2**63 - 1),
    "response-cache-byte-size": (0, 2**63 - 1),
}
_FLOAT_RANGES = {"min-supported-compute-capability": (0.0, 100.0)}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


def option_name(key: str) -> str:
    """A ``search_space.server`` key without its dashes (``--http-thread-count`` ->
    ``http-thread-count``); ValueError naming what Triton 2.51 accepts."""
    name = key.lstrip("-").split("=", 1)[0]
    if "=" in key:
        raise ValueError(f"'{key}': give the option's name as the key and its values as the list")
    if name in _RESERVED:
        raise ValueError(f"--{name} is set by {_RESERVED[name]}")
    if name not in _TUNABLE:
        known = [*_TUNABLE, *_RESERVED]
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"closest: {', '.join('--' + n for n in near)}" if near else f"tunable: {', '.join(_TUNABLE)}"
        raise ValueError(f"--{name} is not an option of tritonserver 2.51; {hint}")
    return name


def check_option_value(name: str, value: Any) -> None:
    """ValueError when ``value`` is not of the option's type."""
    wanted = _TUNABLE[name]
    ok = isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool))
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"--{name} takes {_TYPE_NAMES[wanted]}, not {value!r}")
    if wanted is int:
        low, high = _INT_RANGES.get(name, (0, _INT32_MAX))
        if not low <= value <= high:
            raise ValueError(f"--{name} takes an integer from {low} to {high}, not {value}")
    elif wanted is float:
        low, high = _FLOAT_RANGES[name]
        if not low <= value <= high:  # NaN too
            raise ValueError(f"--{name} takes a number from {low:g} to {high:g}, not {value!r}")
    elif wanted is str and (not value or any(c.isspace() for c in value)):
        raise ValueError(f"--{name} takes one word without spaces or line breaks, not {value!r}")


def server_argv(options: dict[str, Any]) -> list[str]:
    """A trial's options as tritonserver arguments (an unset one, None, is not passed)."""
    argv = []
    for name, value in options.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        argv.append(f"--{name}={text}")
    return argv
