"""`selextract dashboard`: a live scaling dashboard (the scaling guide's scaling_dashboard.py).

A Starlette/FastAPI app: `/` is one self-contained page (inline CSS, JS and SVG charts,
nothing from a CDN), `/ws` pushes a snapshot every `interval` seconds over a WebSocket,
`/api/snapshot` answers the same snapshot once (scripts, curl). A snapshot holds the
metrics, every trigger with value, threshold and verdict, the recommendation with its
cost delta, the cost projection across phases and a short history for the trend lines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from infra.config import PHASE_NAMES, Settings
from ops.costs import phase_cost_delta, projection
from ops.metrics import Metrics, MetricsError
from ops.scaling import analyze, thresholds_table

PAGE = Path(__file__).with_name("dashboard.html")
HISTORY_FIELDS = ("cpu_percent_7d", "memory_percent_7d", "queue_depth", "api_p95_seconds", "storage_percent")


class DashboardState:
    """Collects metrics (at most once per `interval`), keeps a history, builds snapshots."""

    def __init__(
        self,
        collect: Callable[[], Metrics],
        settings: Settings,
        *,
        current_phase: int | None = None,
        interval: float = 3.0,
        history: int = 200,
    ) -> None:
        self.collect = collect
        self.settings = settings
        self.current_phase = settings.phase if current_phase is None else current_phase
        self.interval = interval
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._at = 0.0
        self.projection = [p.__dict__ for p in projection(settings)]
        self.thresholds = thresholds_table()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._at >= self.interval:
                self._snapshot = self._build()
                self._at = time.monotonic()
            return self._snapshot

    def _build(self) -> dict[str, Any]:
        error = None
        try:
            metrics = self.collect()
        except MetricsError as exc:
            metrics, error = Metrics(source="unavailable"), str(exc)
        analysis = analyze(metrics, self.current_phase)
        rec = analysis.recommendation
        if rec.target_phase != self.current_phase:
            rec.cost = phase_cost_delta(self.settings, rec.target_phase)
        point = {"t": metrics.collected_at, **{f: metrics.get(f) for f in HISTORY_FIELDS}}
        if error is None:
            self.history.append(point)
        return {
            "stack": self.settings.stack,
            "phase": self.current_phase,
            "phase_name": PHASE_NAMES[self.current_phase],
            "updated_at": time.time(),
            "source": metrics.source,
            "error": error,
            "analysis": analysis.to_dict(),
            "projection": self.projection,
            "budget": self.settings.monthly_budget,
            "history": list(self.history),
        }


def create_app(state: DashboardState) -> FastAPI:
    app = FastAPI(title="Selextract scaling dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page.replace("{{interval_ms}}", str(int(state.interval * 1000))))

    @app.get("/api/snapshot")
    async def snapshot() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(state.snapshot))

    @app.get("/api/thresholds")
    def thresholds() -> JSONResponse:
        return JSONResponse(state.thresholds)

    @app.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_json(await run_in_threadpool(state.snapshot))
                await asyncio.sleep(state.interval)
        except (WebSocketDisconnect, RuntimeError):
            return

    return app


def serve(state: DashboardState, host: str = "127.0.0.1", port: int = 8050) -> None:
    import uvicorn

    uvicorn.run(create_app(state), host=host, port=port, log_level="warning", ws="websockets")
