"""The docker launcher: one Triton container per trial, through the Docker engine's API."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import docker.types

from sweeper.errors import SweeperError, TrialError
from sweeper.launchers._base import Endpoints, Launcher, Server, connect_address, free_port, wait_until_ready
from sweeper.spec import DockerSpec, ServerSpec

_CONTAINER_REPOSITORY = "/models"
_PORTS = (8000, 8001, 8002)  # Triton's HTTP, gRPC and metrics ports inside the container
_STOP_GRACE_S = 10
_DEFAULT_BACKENDS = "/opt/tritonserver/backends"
# Which sweeper process created a container: "<host>:<pid>".
LABEL_OWNER = "triton-sweeper.owner"
_OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(container) -> bool:
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


class DockerLauncher(Launcher):
    """Runs ``server.docker.image``; with ``network: host`` the ports are chosen on the host's
    loopback, otherwise Triton's ports are published on 127.0.0.1 only."""

    def __init__(self, server: ServerSpec) -> None:
        self._server = server
        self._spec: DockerSpec = server.docker or DockerSpec()
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> docker.DockerClient:
        where = self._spec.base_url or "DOCKER_HOST or unix:///var/run/docker.sock"
        try:
            client = (
                docker.DockerClient(base_url=self._spec.base_url) if self._spec.base_url else docker.from_env()
            )
            client.ping()
        except docker.errors.DockerException as exc:
            permission = "ermission denied" in str(exc)
            raise SweeperError(
                f"cannot reach the Docker engine at {where}: {_short(exc)}",
                hint="add your user to the 'docker' group (or run as root)" if permission
                else "start the engine (dockerd / systemctl start docker), or set server.docker.base_url or DOCKER_HOST",
            ) from None
        return client

    def preflight(self) -> None:
        self._ensure_image()
        if self.has_gpu:
            runtimes = self.client.info().get("Runtimes", {})
            if "nvidia" not in runtimes:
                raise SweeperError(
                    f"server.docker.gpus is {self._spec.gpus!r} but the Docker engine has no NVIDIA runtime "
                    f"(runtimes: {', '.join(runtimes) or 'none'})",
                    hint="install the NVIDIA Container Toolkit and restart dockerd, or set server.docker.gpus: none",
                )

    def _ensure_image(self) -> None:
        image, policy = self._spec.image, self._spec.pull
        present = True
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            present = False
        if policy == "always" or (policy == "missing" and not present):
            try:
                self.client.images.pull(image)
            except docker.errors.DockerException as exc:
                raise SweeperError(
                    f"pulling {image} failed: {_short(exc)}",
                    hint=f"check the name and your registry login (docker login), or docker pull {image} "
                    "yourself and set server.docker.pull: never",
                ) from None
        elif not present:
            raise SweeperError(
                f"the image {image} is not present and server.docker.pull is 'never'",
                hint=f"docker pull {image}, or set server.docker.pull: missing",
            )

    @property
    def has_gpu(self) -> bool:
        return self._spec.gpus != "none"

    @functools.cached_property
    def has_onnxruntime_backend(self) -> bool:
        """Whether the image has Triton's onnxruntime backend (NVIDIA's images do)."""
        folder = self._spec.backend_directory or _DEFAULT_BACKENDS
        listing = self.client.containers.run(
            self._spec.image, ["ls", folder], remove=True, volumes=self._volumes(), environment=self._spec.env,
            network_mode="none",
        )
        return "onnxruntime" in listing.decode().split()

    def _volumes(self, repository: Path | None = None) -> dict[str, dict[str, str]]:
        volumes = {host: {"bind": inside, "mode": "ro"} for host, inside in self._spec.volumes.items()}
        if repository is not None:
            volumes[str(repository.resolve())] = {"bind": _CONTAINER_REPOSITORY, "mode": "ro"}
        return volumes

    def remove_leftovers(self, labels: dict[str, str]) -> int:
        """Remove the labelled containers whose sweeper is gone. A container whose owner runs
        on, on this host, belongs to another worker of a shared study: it stays."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        stale = [c for c in self.client.containers.list(all=True, filters=filters) if not _owner_alive(c)]
        for container in stale:
            container.remove(force=True)
        return len(stale)

    def start(self, repository: Path, model_name: str, log_path: Path, labels: dict[str, str]) -> Server:
        address = self._server.address
        argv = [self._spec.tritonserver, f"--model-repository={_CONTAINER_REPOSITORY}", "--exit-timeout-secs=5"]
        if self._spec.backend_directory:
            argv.append(f"--backend-directory={self._spec.backend_directory}")
        options: dict = {}
        if self._spec.network == "host":
            ports = [free_port(address) for _ in _PORTS]
            host = connect_address(address)
            for service, port in zip(("http", "grpc", "metrics"), ports):
                argv += [f"--{service}-address={address}", f"--{service}-port={port}"]
            options["network_mode"] = "host"
        else:
            ports = [free_port("127.0.0.1") for _ in _PORTS]
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
        container = self.client.containers.create(
            self._spec.image,
            argv,
            name=f"sweeper-{labels.get('triton-sweeper.study', 'x')}-{labels.get('triton-sweeper.trial', 'x')}-"
            f"{uuid.uuid4().hex[:6]}",
            labels={**labels, LABEL_OWNER: _OWNER},
            volumes=self._volumes(repository),
            environment=self._spec.env,
            shm_size=self._spec.shm_size,
            ulimits=[docker.types.Ulimit(name=k, soft=v, hard=v) for k, v in self._spec.ulimits.items()],
            **options,
        )
        server = _Container(container, Endpoints(*(f"{host}:{port}" for port in ports)), log_path)
        try:
            container.start()
            server.stream_log()
            wait_until_ready(
                server.endpoints, model_name, alive=server.alive, read_log=server.log_text,
                timeout_s=self._server.startup_timeout_s,
            )
        except docker.errors.APIError as exc:
            server.stop()
            raise TrialError(f"the container did not start: {_short(exc)}") from None
        except BaseException:
            server.stop()
            raise
        return server


class _Container(Server):
    def __init__(self, container, endpoints: Endpoints, log_path: Path) -> None:
        self._container = container
        self.endpoints = endpoints
        self.id = container.id
        self._log_path = log_path
        self._log_thread: threading.Thread | None = None
        self._stopped = False

    def stream_log(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)

        def copy() -> None:
            with open(self._log_path, "wb") as log:
                for chunk in self._container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()

        self._log_thread = threading.Thread(target=copy, name=f"log-{self.id[:12]}", daemon=True)
        self._log_thread.start()

    def log_text(self) -> str:
        try:
            return self._container.logs().decode(errors="replace")
        except docker.errors.DockerException:
            return self._log_path.read_text(errors="replace") if self._log_path.is_file() else ""

    def alive(self) -> bool:
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return False
        return self._container.status in ("created", "running")

    def stop(self) -> None:
        """Stop (SIGTERM, then SIGKILL after the grace period) and remove the container."""
        if self._stopped:
            return
        try:
            self._container.stop(timeout=_STOP_GRACE_S)
        except docker.errors.APIError:
            pass  # gone already, or stopping: the forced removal below settles it
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
        for attempt in range(3):
            try:
                self._container.remove(force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError as exc:  # e.g. 409 "removal already in progress"
                if attempt == 2:
                    raise SweeperError(
                        f"could not remove container {self.id[:12]}: {_short(exc)}",
                        hint=f"docker rm -f {self.id[:12]}",
                    ) from None
                time.sleep(0.5)
        self._stopped = True


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300]
