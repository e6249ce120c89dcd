"""Server launchers: one interface (``Launcher``), one implementation per way of running Triton."""

from sweeper.launchers._base import Endpoints, Launcher, Server, failure_reason, server_metadata, server_statistics
from sweeper.launchers._docker import DockerLauncher
from sweeper.launchers._local import LocalLauncher

__all__ = [
    "DockerLauncher",
    "Endpoints", "Launcher", "LocalLauncher", "Server", "failure_reason", "server_metadata", "server_statistics"]
