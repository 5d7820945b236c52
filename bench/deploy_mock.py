"""One size of the deploy-cost benchmark, in its own process (so its peak RSS is its own):
the real Pulumi program for the phase 4 stack file under `pulumi.runtime.set_mocks`
(tests/infra/pulumi_harness.py) with `selextract:workers.servers = N`.

    python -m bench.deploy_mock --servers 100      # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import yaml

from tests.infra.pulumi_harness import ROOT, run_program

STACK_FILE = ROOT / "Pulumi.phase4.yaml"


def worker_config(servers: int) -> dict:
    workers = dict(yaml.safe_load(STACK_FILE.read_text())["config"]["selextract:workers"])
    workers["servers"] = servers
    return workers


def extra_config(servers: int) -> dict:
    extra: dict = {"selextract:workers": worker_config(servers)}
    if servers > 200:  # a /24 holds ~245 hosts: give the fleet a /20 inside 10.0.0.0/16
        extra["selextract:network"] = {"cidr": "10.0.0.0/16", "subnet": "10.0.16.0/20"}
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, required=True)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = run_program(STACK_FILE, extra_config=extra_config(args.servers))
    seconds = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "servers": args.servers,
                "resources": len(run.resources),
                "seconds": seconds,
                "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                "peak_rss_mb": cpu1.ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
