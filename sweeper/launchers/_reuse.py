"""How trials get their servers: a fresh one each (``restart``) or one the models are loaded
into (``reload``). ``REUSE`` maps the spec's ``server.reuse`` to the class."""

from __future__ import annotations

import abc
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from sweeper.errors import TrialError
from sweeper.files import write_atomic
from sweeper.launchers._base import LABEL_TRIAL, Launcher, Server

Writer = Callable[[Path, str], Path]
"""(repository, model name) -> writes the trial's model under that name; returns its folder."""


class ServerReuse(abc.ABC):
    """How a trial gets a server for its model and gives it back."""

    mode: str

    @abc.abstractmethod
    def __init__(self, launcher: Launcher, directory: Path, startup_timeout_s: float, complete_config: bool) -> None:
        """``directory`` is the study folder; ``complete_config``: see ``Launcher.start``."""

    @abc.abstractmethod
    def serve(
        self, write: Writer, trial_dir: Path, labels: dict[str, str], model_name: str, options: Sequence[str] = ()
    ) -> tuple[Server, str]:
        """A ready server with the trial's model (``write`` lays it out) and tritonserver
        ``options``, and the name the model is served under. Raises TrialError when the server or
        the model fails."""

    @abc.abstractmethod
    def retire(self, server: Server, trial_dir: Path, served: str, failed: bool) -> None:
        """Done with the trial: its log goes to ``trial_dir``; a failed trial's server is not reused."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop what is still running."""


class Restart(ServerReuse):
    """A fresh server per trial (the default): started on the trial's repository, stopped after."""

    mode = "restart"

    def __init__(self, launcher: Launcher, directory: Path, startup_timeout_s: float, complete_config: bool) -> None:
        self._launcher = launcher
        self._complete = complete_config

    def serve(
        self, write: Writer, trial_dir: Path, labels: dict[str, str], model_name: str, options: Sequence[str] = ()
    ) -> tuple[Server, str]:
        repository = trial_dir / "repository"
        write(repository, model_name)
        server = self._launcher.start(
            repository,
            trial_dir / "server.log",
            labels,
            model_name=model_name,
            complete_config=self._complete,
            options=options,
        )
        return server, model_name

    def retire(self, server: Server, trial_dir: Path, served: str, failed: bool) -> None:
        server.stop()

    def close(self) -> None:
        pass


class Reload(ServerReuse):
    """One server for the study (explicit model control): each trial's model is loaded into it
    through Triton's repository API, and unloaded after. It is restarted when it died or a
    load failed, and when a trial's tritonserver options differ from those it runs with.

    Each trial's model is served under a name of its own (``<model>__t<trial>``): reloading the
    same name would wait for the previous instances' unload, which the python backend spends
    in a one-second health-check sleep per instance. Unloading runs in Triton's background."""

    mode = "reload"

    def __init__(self, launcher: Launcher, directory: Path, startup_timeout_s: float, complete_config: bool) -> None:
        self._launcher = launcher
        self._complete = complete_config
        self._folder = directory / "reload"
        self._repository = self._folder / "repository"
        self._timeout = startup_timeout_s
        self._server: Server | None = None
        self._options: list[str] = []
        self._log_from = 0
        self._starts = 0
        self._retired: list[str] = []

    def serve(
        self, write: Writer, trial_dir: Path, labels: dict[str, str], model_name: str, options: Sequence[str] = ()
    ) -> tuple[Server, str]:
        if self._server is not None and (not self._server.alive() or list(options) != self._options):
            self.close()
        if self._server is None:
            self._options = list(options)
            self._starts += 1
            if self._repository.exists():
                shutil.rmtree(self._repository)
            self._repository.mkdir(parents=True)
            log = self._folder / f"server-{self._starts}.log"
            self._server = self._launcher.start(
                self._repository,
                log,
                {**labels, LABEL_TRIAL: "reload"},
                model_name=None,
                complete_config=self._complete,
                options=self._options,
            )
        while len(self._retired) > 1:  # unloaded a trial ago: Triton is done with its files
            shutil.rmtree(self._repository / self._retired.pop(0), ignore_errors=True)
        served = f"{model_name}__t{labels[LABEL_TRIAL]}"
        self._log_from = len(self._server.log_text())
        write(self._repository, served)
        try:
            self._server.load(served, self._timeout)
        except TrialError:
            self._save_log(trial_dir)
            self.close()
            raise
        return self._server, served

    def retire(self, server: Server, trial_dir: Path, served: str, failed: bool) -> None:
        self._save_log(trial_dir)
        if failed or not server.alive():
            self.close()
            return
        server.unload(served, self._timeout)
        self._retired.append(served)

    def _save_log(self, trial_dir: Path) -> None:
        if self._server is not None:
            write_atomic(trial_dir / "server.log", self._server.log_text()[self._log_from :])

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._retired.clear()


REUSE: dict[str, type[ServerReuse]] = {"restart": Restart, "reload": Reload}
