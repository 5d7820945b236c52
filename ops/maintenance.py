"""`selextract maintenance on|off|status`: the API's maintenance switch.

The switch is one Redis key every API server reads (`app.core.maintenance`); this module
flips it with the app's own code, never with a copy of the key name: inside the API
container (`python -m app.maintenance on`, docker) or in-process against `REDIS_URL`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.access import OpsError, Target, run

DEFAULT_MESSAGE = "Selextract is down for maintenance; please retry later."


@dataclass(frozen=True)
class MaintenanceState:
    on: bool
    message: str | None = None
    retry_after: int | None = None

    def describe(self) -> str:
        if not self.on:
            return "maintenance: off"
        return f"maintenance: on (retry after {self.retry_after}s): {self.message}"


def _in_process(target: Target, action: str, message: str, retry_after: int) -> MaintenanceState:
    import redis

    from app.core import maintenance

    assert target.redis.url is not None
    client = redis.Redis.from_url(target.redis.url, socket_timeout=5, socket_connect_timeout=5)
    try:
        if action == "on":
            maintenance.enable(client, message, retry_after)
        elif action == "off":
            maintenance.disable(client)
        state = maintenance.read(client)
    except redis.RedisError as exc:
        raise OpsError(f"maintenance {action}: {exc}") from None
    finally:
        client.close()
    return MaintenanceState(state is not None, state.message if state else None, state.retry_after if state else None)


def _parse(line: str) -> MaintenanceState:
    # "maintenance: on (retry after 600s): message" | "maintenance: off"
    text = line.strip().removeprefix("maintenance: ")
    if text == "off":
        return MaintenanceState(False)
    head, _, message = text.partition("): ")
    retry = int(head.split("retry after ")[1].rstrip("s")) if "retry after " in head else None
    return MaintenanceState(True, message, retry)


def maintenance(
    target: Target, action: str, *, message: str = DEFAULT_MESSAGE, retry_after: int = 600
) -> MaintenanceState:
    if action not in ("on", "off", "status"):
        raise ValueError(f"unknown maintenance action {action!r}")
    if target.api_container is None:
        return _in_process(target, action, message, retry_after)
    argv = ["python3", "-m", "app.maintenance", action]
    if action == "on":
        argv += ["--retry-after", str(retry_after), "--message", message]
    out = run(target.api_container.argv(argv), what=f"maintenance {action} in {target.api_container.name}", timeout=60)
    lines = [line for line in out.decode().splitlines() if line.startswith("maintenance:")]
    if not lines:
        raise OpsError(f"maintenance {action}: unexpected answer {out.decode()[-200:]!r}")
    return _parse(lines[-1])
