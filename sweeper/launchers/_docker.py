"""The docker launcher: Triton in a container, through the Docker engine's API."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import docker.types

import docker
from sweeper.errors import SweeperError, TrialError
from sweeper.launchers._base import (
    LABEL_STUDY,
    LABEL_TRIAL,
    Endpoints,
    Launcher,
    PortTaken,
    Server,
    connect_address,
    describe_exit,
    free_ports,
    listen_options,
    port_taken,
    server_options,
    start_on_free_ports,
    wait_until_ready,
)
from sweeper.launchers._watchdog import watchdog

if TYPE_CHECKING:
    from sweeper.spec import DockerSpec, ServerSpec

_CONTAINER_REPOSITORY = "/models"
OUT_OF_MEMORY = -1001
"""``run_to_completion``'s status for a command the engine stopped at its memory limit."""
_PORTS = (8000, 8001, 8002)  # Triton's HTTP, gRPC and metrics ports inside the container
_DEFAULT_BACKENDS = "/opt/tritonserver/backends"
# Which sweeper process created a container: "<host>:<pid>".
LABEL_OWNER = "triton-sweeper.owner"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(container: Any) -> bool:
    host, _, pid = container.labels.get(LABEL_OWNER, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, run by another user
    return True


def connect(base_url: str | None) -> docker.DockerClient:
    """A client of the Docker engine; unreachable is a SweeperError that says how to fix it."""
    where = base_url or "DOCKER_HOST or unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        permission = "ermission denied" in str(exc)
        raise SweeperError(
            f"cannot reach the Docker engine at {where}: {short(exc)}",
            hint="add your user to the 'docker' group (or run as root)"
            if permission
            else "start the engine (dockerd / systemctl start docker), or set server.docker.base_url or DOCKER_HOST",
        ) from None
    return client


def ensure_image(client: docker.DockerClient, image: str, policy: str, key: str) -> None:
    """Have ``image`` locally, pulling it per ``policy`` (never | missing | always)."""
    try:
        client.images.get(image)
        present = True
    except docker.errors.ImageNotFound:
        present = False
    if policy == "always" or (policy == "missing" and not present):
        try:
            client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise SweeperError(
                f"pulling {image} failed: {short(exc)}",
                hint=f"check the name and your registry login (docker login), or docker pull {image} "
                f"yourself and set {key}.pull: never",
            ) from None
    elif not present:
        raise SweeperError(
            f"the image {image} is not present and {key}.pull is 'never'",
            hint=f"docker pull {image}, or set {key}.pull: missing",
        )


def read_only_volumes(volumes: dict[str, str]) -> dict[str, dict[str, str]]:
    """The docker SDK's volume mapping for ``{host path: container path}``, read-only."""
    return {host: {"bind": inside, "mode": "ro"} for host, inside in volumes.items()}


def run_to_completion(
    image: str,
    argv: list[str],
    *,
    base_url: str | None,
    volumes: dict[str, str],
    writable: Path,
    environment: dict[str, str],
    timeout_s: float,
    labels: dict[str, str],
    memory_mb: float | None = None,
) -> tuple[int, str]:
    """Run a one-shot command in ``image`` on the host network (a client of the servers, such as
    perf_analyzer): ``volumes`` read-only, ``writable`` mounted at the same path and used as the
    working folder, at most ``memory_mb`` of memory. Returns (exit status, output; 124 when it
    outran ``timeout_s``, ``OUT_OF_MEMORY`` when the engine stopped it at ``memory_mb``). The
    container is guarded by the watchdog and removed on every exit."""
    client = connect(base_url)
    mounts = read_only_volumes(volumes)
    mounts[str(writable)] = {"bind": str(writable), "mode": "rw"}
    container = client.containers.create(
        image,
        argv,
        network_mode="host",
        volumes=mounts,
        environment=environment,
        working_dir=str(writable),
        labels=labels,
        **({"mem_limit": f"{int(memory_mb)}m", "memswap_limit": f"{int(memory_mb)}m"} if memory_mb else {}),
    )
    guarded = f"{container.id} {base_url or '-'}"
    watchdog().add("container", guarded)
    try:
        container.start()
        status = _wait_for(container, timeout_s)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
        watchdog().remove("container", guarded)
    return status, output


def _wait_for(container: Any, timeout_s: float) -> int:
    """A one-shot container's exit status: 124 past ``timeout_s``, ``OUT_OF_MEMORY`` when the
    engine stopped it at its memory limit."""
    try:
        status = int(container.wait(timeout=timeout_s)["StatusCode"])
    except Exception:  # the engine's read timed out: the command hangs
        return 124
    container.reload()
    return OUT_OF_MEMORY if container.attrs.get("State", {}).get("OOMKilled") else status


class DockerLauncher(Launcher):
    """Runs ``server.docker.image``; with ``network: host`` the ports are chosen on the host's
    loopback, otherwise Triton's ports are published on 127.0.0.1 only."""

    name = "docker"

    def __init__(self, settings: DockerSpec, *, address: str = "127.0.0.1", startup_timeout_s: float = 120.0) -> None:
        self._spec = settings
        self._address = address
        self._timeout = startup_timeout_s
        self._client: docker.DockerClient | None = None

    @classmethod
    def from_spec(cls, server: ServerSpec) -> DockerLauncher:
        """The launcher a spec's ``server:`` block describes (the spec fills in ``docker:``)."""
        return cls(server.docker, address=server.address, startup_timeout_s=server.startup_timeout_s)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self._spec.base_url)
        return self._client

    def preflight(self) -> None:
        ensure_image(self.client, self._spec.image, self._spec.pull, "server.docker")
        if self.has_gpu:
            runtimes = self.client.info().get("Runtimes", {})
            if "nvidia" not in runtimes:
                raise SweeperError(
                    f"server.docker.gpus is {self._spec.gpus!r} but the Docker engine has no NVIDIA runtime "
                    f"(runtimes: {', '.join(runtimes) or 'none'})",
                    hint="install the NVIDIA Container Toolkit and restart dockerd, or set server.docker.gpus: none",
                )

    @property
    def has_gpu(self) -> bool:
        return self._spec.gpus != "none"

    @functools.cached_property
    def backends(self) -> frozenset[str]:
        """The backends folder of the image (NVIDIA's images have onnxruntime, pytorch, ...)."""
        folder = self._spec.backend_directory or _DEFAULT_BACKENDS
        listing = self.client.containers.run(
            self._spec.image,
            ["ls", folder],
            remove=True,
            volumes=read_only_volumes(self._spec.volumes),
            environment=self._spec.env,
            network_mode="none",
        )
        return frozenset(listing.decode().split())

    def describe(self) -> str:
        return f"the docker launcher's image {self._spec.image}"

    def remove_leftovers(self, labels: dict[str, str]) -> int:
        """Remove the labelled containers whose sweeper is gone. A container whose owner runs
        on, on this host, belongs to another worker of a shared study: it stays."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        stale = [c for c in self.client.containers.list(all=True, filters=filters) if not _owner_alive(c)]
        for container in stale:
            container.remove(force=True)
        return len(stale)

    def _network(self, argv: list[str]) -> tuple[str, list[int], dict[str, Any]]:
        """Where the container's Triton listens: (host clients connect to, its three ports, the
        container options); ``argv`` gets the addresses and ports on the host network."""
        options: dict[str, Any] = {}
        if self._spec.network == "host":
            ports = free_ports(self._address, len(_PORTS))
            argv += listen_options(self._address, ports)
            options["network_mode"] = "host"
            host = connect_address(self._address)
        else:
            ports = free_ports("127.0.0.1", len(_PORTS))
            host = "127.0.0.1"
            # Published on the loopback only: Triton has no authentication.
            options["ports"] = {f"{inner}/tcp": ("127.0.0.1", outer) for inner, outer in zip(_PORTS, ports)}
            if self._spec.bridge is not None:
                options["network"] = self._spec.bridge
        if self.has_gpu:
            ids = None if self._spec.gpus == "all" else [str(i) for i in self._spec.gpus]
            options["device_requests"] = [
                docker.types.DeviceRequest(count=-1 if ids is None else None, device_ids=ids, capabilities=[["gpu"]])
            ]
        return host, ports, options

    def start(
        self,
        repository: Path,
        log_path: Path,
        labels: dict[str, str],
        *,
        model_name: str | None,
        complete_config: bool = False,
        options: Sequence[str] = (),
    ) -> Server:
        argv = [
            self._spec.tritonserver,
            f"--model-repository={_CONTAINER_REPOSITORY}",
            *server_options(model_name, complete_config),
            *options,
        ]
        if self._spec.backend_directory:
            argv.append(f"--backend-directory={self._spec.backend_directory}")
        return start_on_free_ports(functools.partial(self._start_once, argv, repository, log_path, labels, model_name))

    def _start_once(
        self, argv: list[str], repository: Path, log_path: Path, labels: dict[str, str], model_name: str | None
    ) -> Server:
        """Create and start the container on ports chosen now, wait until Triton is ready;
        removed on failure."""
        argv = list(argv)
        host, ports, container_options = self._network(argv)
        volumes = read_only_volumes(self._spec.volumes)
        volumes[str(repository.resolve())] = {"bind": _CONTAINER_REPOSITORY, "mode": "ro"}
        study, trial = labels.get(LABEL_STUDY, "x"), labels.get(LABEL_TRIAL, "x")
        container = self.client.containers.create(
            self._spec.image,
            argv,
            name=f"sweeper-{study}-{trial}-{uuid.uuid4().hex[:6]}",
            labels={**labels, LABEL_OWNER: _owner()},
            volumes=volumes,
            environment=self._spec.env,
            shm_size=self._spec.shm_size,
            ulimits=[docker.types.Ulimit(name=k, soft=v, hard=v) for k, v in self._spec.ulimits.items()],
            **container_options,
        )
        guarded = f"{container.id} {self._spec.base_url or '-'}"
        watchdog().add("container", guarded)
        server = _Container(container, Endpoints(*(f"{host}:{port}" for port in ports)), log_path, guarded)
        try:
            container.start()
            server.stream_log()
            wait_until_ready(server, model_name, timeout_s=self._timeout)
        except docker.errors.APIError as exc:
            server.stop()
            error = PortTaken if port_taken(str(exc)) else TrialError
            raise error(f"the container did not start: {short(exc)}") from None
        except BaseException:
            server.stop()
            raise
        return server


class _Container(Server):
    def __init__(self, container: Any, endpoints: Endpoints, log_path: Path, guarded: str) -> None:
        self._container = container
        self.endpoints = endpoints
        self.id = container.id
        self._log_path = log_path
        self._guarded = guarded
        self._log_thread: threading.Thread | None = None
        self._stopped = False

    def stream_log(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)

        def copy() -> None:
            try:
                with open(self._log_path, "wb") as log:
                    for chunk in self._container.logs(stream=True, follow=True):
                        log.write(chunk)
                        log.flush()
            except (docker.errors.DockerException, OSError):
                pass  # the container was removed while streaming: the log ends there

        self._log_thread = threading.Thread(target=copy, name=f"log-{self.id[:12]}", daemon=True)
        self._log_thread.start()

    def log_text(self) -> str:
        try:
            return self._container.logs().decode(errors="replace")
        except docker.errors.DockerException:
            return self._log_path.read_text(errors="replace") if self._log_path.is_file() else ""

    def memory_mb(self) -> float | None:
        """The container's memory use as the engine reports it, less its page cache."""
        try:
            # one_shot: the engine answers at once instead of sampling CPU use for a second first
            stats = self._container.stats(stream=False, one_shot=True).get("memory_stats", {})
        except docker.errors.DockerException:
            return None
        if "usage" not in stats:
            return None
        details = stats.get("stats", {})
        cache = details.get("inactive_file", details.get("total_inactive_file", details.get("cache", 0)))
        return (stats["usage"] - cache) / 2**20

    def alive(self) -> bool:
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return False
        return self._container.status in ("created", "running")

    def exit_reason(self) -> str | None:
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return "was removed"
        if self._container.status in ("created", "running"):
            return None
        state = self._container.attrs.get("State", {})
        code = int(state.get("ExitCode", 0))
        if state.get("OOMKilled"):
            return "was killed: out of memory"
        # A container whose process was killed by signal N exits with 128 + N.
        return describe_exit(-(code - 128) if code > 128 else code)

    def stop(self) -> None:
        """Kill and remove the container (a trial's server has nothing to save)."""
        if self._stopped:
            return
        for attempt in range(3):
            try:
                self._container.remove(force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError as exc:  # e.g. 409 "removal already in progress"
                if attempt == 2:
                    raise SweeperError(
                        f"could not remove container {self.id[:12]}: {short(exc)}",
                        hint=f"docker rm -f {self.id[:12]}",
                    ) from None
                time.sleep(0.5)
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
        watchdog().remove("container", self._guarded)
        self._stopped = True


def short(exc: Exception) -> str:
    """The first line of an engine error, bounded."""
    return str(exc).splitlines()[0][:300]
