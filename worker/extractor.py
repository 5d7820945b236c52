"""Extraction in helper processes, so one page cannot hold a worker for longer than its budget.

A selector's cost on a page can be exponential (nested predicates) and lxml evaluates an
XPath in C, where no Python timeout can stop it. So each worker process keeps a few helper
processes (``python -m worker.extractor``) and sends them pages over a pipe; a helper that
does not answer within ``SCRAPER_EXTRACT_SECONDS`` is killed and replaced, and that page
fails with ``extraction_timeout``. Each helper also limits itself with the kernel's CPU
time limit per page (it dies even if its parent is gone) and an address-space limit.
The helper sends back the page's data already serialised as JSON, size-checked.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from common.config import Settings

log = logging.getLogger(__name__)
_HEADER = struct.Struct("!Q")
STARTUP_SECONDS = 60.0
_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding common/ and worker/


class ExtractionFailed(Exception):
    """A page's data could not be extracted; ``code`` is the URL's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Extracted:
    data: bytes  # the page's data, as JSON
    item_count: int


class _Gone(Exception):
    """The helper closed its pipe (it died)."""


class _Helper:
    """One helper process and its two pipes."""

    def __init__(self, memory_bytes: int) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SELEXTRACT_EXTRACT_MEMORY": str(memory_bytes)}
        # no secrets in its environment: it only parses untrusted pages
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {_ROOT!r}); import worker.extractor as m; m.serve()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        # it says when its imports are done, so starting up is not counted in a page's budget
        try:
            ready = self.receive(time.monotonic() + STARTUP_SECONDS)
        except (TimeoutError, _Gone):
            ready = None
        if ready != ("ready",):
            self.kill()
            raise RuntimeError(f"an extraction helper did not start within {STARTUP_SECONDS}s")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Any) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        try:
            while data:
                data = data[os.write(self.stdin, data) :]
        except (BrokenPipeError, ConnectionResetError):
            raise _Gone() from None

    def receive(self, deadline: float) -> Any:
        """The helper's answer; TimeoutError once ``deadline`` (monotonic) has passed."""
        size = _HEADER.unpack(self._read(_HEADER.size, deadline))[0]
        return pickle.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float) -> bytes:
        chunks = bytearray()
        poller = select.poll()
        poller.register(self.stdout, select.POLLIN)
        while len(chunks) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError()
            chunk = os.read(self.stdout, min(size - len(chunks), 1 << 20))
            if not chunk:
                raise _Gone()
            chunks.extend(chunk)
        return bytes(chunks)

    def kill(self, grace: float = 0.0) -> int | None:
        """Stop the helper (after ``grace`` seconds to exit on its own); its exit status
        (negative: the signal that ended it)."""
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


class ExtractorPool:
    """At most ``size`` helpers, started on demand and reused; thread-safe."""

    def __init__(self, size: int, seconds: float, memory_bytes: int) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._idle: queue.LifoQueue[_Helper] = queue.LifoQueue()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ExtractorPool:
        return cls(
            settings.scraper_extract_processes,
            settings.scraper_extract_seconds,
            settings.scraper_extract_memory_mb * 1024 * 1024,
        )

    def extract(self, rules_json: str, html: str, url: str, max_bytes: int) -> Extracted:
        """The page's data, or ExtractionFailed. Waiting for a free helper is not counted in
        the page's budget; the budget starts when a helper has the page."""
        request = (rules_json, html, url, max_bytes, self.seconds)
        with self._slots:
            helper = self._helper()
            try:
                helper.send(request)
            except _Gone:  # died while idle (killed from outside): not this page's fault
                helper.kill()
                helper = _Helper(self.memory_bytes)
                helper.send(request)
            try:
                reply = helper.receive(time.monotonic() + self.seconds)
            except TimeoutError:
                helper.kill()
                raise ExtractionFailed(
                    "extraction_timeout", f"extracting the data took longer than {self.seconds:g}s"
                ) from None
            except _Gone:
                raise self._died(helper) from None
            except BaseException:  # e.g. the task's soft time limit: the helper may still be busy
                helper.kill()
                raise
            if reply[0] == "retire":  # it answered and exits (its memory may be in a bad state)
                helper.kill()
            else:
                self._idle.put(helper)
        if reply[0] == "ok":
            return Extracted(reply[1], reply[2])
        raise ExtractionFailed(reply[1], reply[2])

    def _helper(self) -> _Helper:
        while True:
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                return _Helper(self.memory_bytes)
            if helper.alive:
                return helper
            helper.kill()

    def _died(self, helper: _Helper) -> ExtractionFailed:
        status = helper.kill(grace=2.0)  # it closed its pipe: let it finish dying
        if status == -signal.SIGXCPU:
            return ExtractionFailed(
                "extraction_timeout", f"extracting the data used more than {self.seconds:g}s of CPU"
            )
        log.warning("an extraction helper died (exit status %s)", status)
        return ExtractionFailed("extraction_error", f"the extraction process died (exit status {status})")

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return


_pool: tuple[int, ExtractorPool] | None = None
_pool_lock = threading.Lock()


def get_pool(settings: Settings) -> ExtractorPool:
    """This process's pool (a forked child starts its own: pipes are not shared)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ExtractorPool.from_settings(settings))
        return _pool[1]


# --- the helper side ----------------------------------------------------------------------


@lru_cache(maxsize=16)
def _rules(rules_json: str) -> Any:
    from common.extraction import ExtractionRules, PreparedRules

    return PreparedRules(ExtractionRules.stored(json.loads(rules_json)))


def _limit_cpu(seconds: float) -> None:
    """SIGXCPU (which ends the process) once this page has used ``seconds`` of CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def handle(rules_json: str, html: str, url: str, max_bytes: int) -> tuple[Any, ...]:
    """One page: ("ok", data JSON, item count), ("error", code, message), or ("retire", code,
    message) when the helper should not be used again."""
    from common.extraction import ResultTooLarge, extract, item_count

    try:
        rules = _rules(rules_json)
        data = extract(html, url, rules, max_chars=max_bytes)
        body = json.dumps(data, ensure_ascii=False).encode()
        if len(body) > max_bytes:
            raise ResultTooLarge(max_bytes)
        return ("ok", body, item_count(data, rules))
    except ResultTooLarge as exc:
        return ("error", "result_too_large", str(exc))
    except (ValueError, RecursionError) as exc:  # parsel reports XPath errors as ValueError
        return ("error", "selector_error", f"a selector failed on this page: {exc}"[:1000])
    except MemoryError:
        return ("retire", "extraction_error", "extracting the data needed more memory than a page may use")
    except Exception as exc:  # lxml reports a failed allocation while parsing as a syntax error
        return ("retire", "extraction_error", f"the page could not be processed ({type(exc).__name__}: {exc})"[:1000])


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """The helper's loop: read a page, answer, until the worker closes the pipe."""
    if stdin is None or stdout is None:
        stdin = os.fdopen(os.dup(0), "rb")
        stdout = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)  # stray prints go to stderr, not into the answers
    memory = int(os.environ.get("SELEXTRACT_EXTRACT_MEMORY", "0"))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    import common.extraction  # noqa: F401  (loaded before the first page's clock starts)

    _answer(stdout, ("ready",))
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        rules_json, html, url, max_bytes, seconds = pickle.loads(stdin.read(_HEADER.unpack(header)[0]))
        _limit_cpu(seconds)
        reply = handle(rules_json, html, url, max_bytes)
        _answer(stdout, reply)
        if reply[0] == "retire":
            return


def _answer(stdout: BinaryIO, message: tuple[Any, ...]) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stdout.write(_HEADER.pack(len(payload)) + payload)
    stdout.flush()
