"""Peak memory of a running server, sampled in the background while a trial measures it."""

from __future__ import annotations

import threading
from types import TracebackType

from sweeper.launchers._base import Server, gpu_memory_mb
from sweeper.measured import Memory

_INTERVAL_S = 0.2


class PeakMemory:
    """``with PeakMemory(server, gpu=...) as peak:`` samples the server's resident memory (and the
    GPU memory Triton reports, where it has a GPU) in a thread of its own, at once and then every
    0.2 s until the block ends; ``peak.result`` then holds the highest of each."""

    def __init__(self, server: Server, *, gpu: bool) -> None:
        self._server = server
        self._gpu = gpu
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._peaks: dict[str, float | None] = {"server_mb": None, "gpu_mb": None}
        self.result = Memory()

    def _sample(self) -> None:
        for key, value in (
            ("server_mb", self._server.memory_mb()),
            ("gpu_mb", gpu_memory_mb(self._server.endpoints) if self._gpu else None),
        ):
            if value is not None and (self._peaks[key] is None or value > self._peaks[key]):
                self._peaks[key] = value

    def _run(self) -> None:
        while True:  # at least one sample, however short the block
            self._sample()
            if self._stop.wait(_INTERVAL_S):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.result = Memory(**self._peaks)
