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
    error_lines,
    model_config,
    server_metadata,
    server_statistics,
)
from sweeper.launchers._docker import DockerLauncher
from sweeper.launchers._local import LocalLauncher
from sweeper.launchers._reuse import REUSE, Reload, Restart

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "docker": DockerLauncher}

__all__ = [
    "LABEL_STUDY",
    "LABEL_TRIAL",
    "LAUNCHERS",
    "REUSE",
    "Reload",
    "Restart",
    "DockerLauncher",
    "Endpoints",
    "Launcher",
    "LocalLauncher",
    "Server",
    "error_lines",
    "model_config",
    "server_metadata",
    "server_statistics",
]
