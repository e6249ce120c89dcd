"""Server launchers: one interface (``Launcher``), one implementation per way of running Triton.

``LAUNCHERS`` maps the spec's ``server.launcher`` names to the classes; adding a launcher is
one entry.
"""

from sweeper.launchers._base import (
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

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "docker": DockerLauncher}

__all__ = [
    "LAUNCHERS",
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
