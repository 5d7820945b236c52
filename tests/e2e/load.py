"""Steady read load through a stack's entry while it is changed: every answer counted."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx


class SteadyLoad:
    """Bounded background load through the entry: GETs of `paths` in turn, ~20 req/s."""

    def __init__(self, base: str, headers: dict[str, str], paths: tuple[str, ...], max_seconds: float = 600) -> None:
        self.base, self.headers, self.paths, self.max_seconds = base, headers, paths, max_seconds
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.base, verify=False, timeout=10) as client:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                path = self.paths[i % len(self.paths)]
                try:
                    status = client.get(path, headers=self.headers).status_code
                    self.results[str(status)] += 1
                    if status not in (200, 429):  # 429: the account's own rate limit, not an outage
                        self.failures.append(f"{path} -> {status}")
                except httpx.HTTPError as exc:
                    self.results["error"] += 1
                    self.failures.append(f"{path} -> {type(exc).__name__}: {exc}")
                i += 1
                time.sleep(0.05)
