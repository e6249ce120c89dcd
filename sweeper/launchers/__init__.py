"""Server launchers: one interface (``Launcher``), one implementation per way of running Triton,
and how trials reuse servers (``Restart``, ``Reload``).

``LAUNCHERS`` maps the spec's ``server.launcher`` names to the classes and ``REUSE`` its
``server.reuse``; adding one is one entry.
"""

from sweeper.launchers._base import (
    LABEL_STUDY,
    LABEL_TRIAL,
    Endpoints,
    Launcher,
    Server,
    describe_exit,
    error_lines,
    gpu_memory_mb,
    model_config,
    server_metadata,
    server_statistics,
)
from sweeper.launchers._docker import OUT_OF_MEMORY, DockerLauncher, run_to_completion
from sweeper.launchers._local import LocalLauncher, host_has_gpu
from sweeper.launchers._memory import PeakMemory
from sweeper.launchers._reuse import REUSE, Reload, Restart

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "docker": DockerLauncher}
"""The spec's ``server.launcher`` names (``sweeper.vocabulary.LAUNCHER_NAMES``) to the classes."""

__all__ = [
    "LABEL_STUDY",
    "LABEL_TRIAL",
    "LAUNCHERS",
    "OUT_OF_MEMORY",
    "REUSE",
    "Reload",
    "Restart",
    "DockerLauncher",
    "Endpoints",
    "Launcher",
    "LocalLauncher",
    "PeakMemory",
    "Server",
    "describe_exit",
    "error_lines",
    "host_has_gpu",
    "gpu_memory_mb",
    "run_to_completion",
    "model_config",
    "server_metadata",
    "server_statistics",
]
