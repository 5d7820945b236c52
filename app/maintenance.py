"""``python -m app.maintenance on|off|status [--retry-after N] [--message TEXT]``:
the switch the ops CLI flips (it writes one Redis key every API server reads)."""

from __future__ import annotations

import argparse
import sys

from app.core import maintenance
from app.core.redis import get_redis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.maintenance", description=__doc__)
    parser.add_argument("action", choices=["on", "off", "status"])
    parser.add_argument("--retry-after", type=int, default=600, help="seconds clients should wait")
    parser.add_argument("--message", default="Selextract is down for maintenance; please retry later.")
    args = parser.parse_args(argv)
    client = get_redis()
    if args.action == "on":
        maintenance.enable(client, args.message, args.retry_after)
    elif args.action == "off":
        maintenance.disable(client)
    state = maintenance.read(client)
    print("maintenance: " + (f"on (retry after {state.retry_after}s): {state.message}" if state else "off"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
