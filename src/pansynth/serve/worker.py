"""One synthesis at a time, and the latest map wins.

A single worker thread owns the generator. Requests put their map into a one-slot box: a map
waiting in the box when a newer one arrives is dropped, and its request is answered as
superseded. A burst of N requests therefore costs at most two syntheses: the one running when
the burst began and the burst's last map.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Superseded(Exception):
    """The job was dropped because a newer map arrived before the worker got to it."""


class WorkerClosed(Exception):
    """The worker was stopped before the job ran."""


@dataclass
class Job:
    """A map waiting for (or going through) the worker; ``wait()`` returns its result or raises."""

    payload: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def wait(self, timeout: float | None = None) -> Any:
        if not self.done.wait(timeout):
            raise TimeoutError("the synthesis did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result


class LatestWinsWorker:
    """Runs ``work(payload)`` in one background thread, on the newest submitted payload only.

    Args:
        work: the function run on each payload that is not superseded (here: synthesize + encode).

    Attributes:
        submitted, completed, superseded: counters (read under no lock: for display and tests).

    Example:
        >>> worker = LatestWinsWorker(lambda x: x * 2)
        >>> worker.submit(21).wait()
        42
        >>> worker.close()
    """

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self._work = work
        self._condition = threading.Condition()
        self._pending: Job | None = None
        self._closed = False
        self.submitted = 0
        self.completed = 0
        self.superseded = 0
        self._thread = threading.Thread(target=self._run, name="pansynth-synthesis", daemon=True)
        self._thread.start()

    def submit(self, payload: Any) -> Job:
        """Queue ``payload`` in the one-slot box, dropping (as superseded) a payload still waiting there."""
        job = Job(payload)
        with self._condition:
            if self._closed:
                job.finish(error=WorkerClosed("the server is shutting down"))
                return job
            if self._pending is not None:
                self._pending.finish(error=Superseded("superseded by a newer map before it was synthesized"))
                self.superseded += 1
            self._pending = job
            self.submitted += 1
            self._condition.notify()
        return job

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._pending is None:  # closed and nothing left
                    return
                job, self._pending = self._pending, None
            try:
                result = self._work(job.payload)
            except Exception as error:  # handed to the waiting request, which answers it
                job.finish(error=error)
            else:
                job.finish(result)
            with self._condition:
                self.completed += 1

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the thread after the running job; a job still waiting is answered with WorkerClosed."""
        with self._condition:
            self._closed = True
            if self._pending is not None:
                self._pending.finish(error=WorkerClosed("the server is shutting down"))
                self._pending = None
            self._condition.notify_all()
        self._thread.join(timeout)
