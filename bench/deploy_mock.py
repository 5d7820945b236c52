"""One size of the deploy-cost benchmark, in its own process (so its peak RSS is its own):
the real Pulumi program for a stack file (phase 4 unless `--stack`) under
`pulumi.runtime.set_mocks` (tests/infra/pulumi_harness.py) with `selextract:workers.servers = N`.

    python -m bench.deploy_mock --servers 100                  # prints one JSON line
    python -m bench.deploy_mock --servers 8 --stack phase2 --program /tmp/old-main.py

Besides time and memory it counts what grows with each host: Docker providers (one
plugin process each in a real preview or up), image builds and image pulls.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import yaml

from tests.infra import pulumi_harness
from tests.infra.pulumi_harness import ROOT, run_program

STACK_FILE = ROOT / "Pulumi.phase4.yaml"
COUNTED = {
    "docker_providers": "pulumi:providers:docker",
    "image_builds": "docker:index/image:Image",
    "image_pulls": "docker:index/remoteImage:RemoteImage",
}


def worker_config(servers: int, stack_file: Path = STACK_FILE) -> dict:
    workers = dict(yaml.safe_load(stack_file.read_text())["config"]["selextract:workers"])
    workers["servers"] = servers
    return workers


def extra_config(servers: int, stack_file: Path = STACK_FILE) -> dict:
    extra: dict = {"selextract:workers": worker_config(servers, stack_file)}
    if servers > 200:  # a /24 holds ~245 hosts: give the fleet a /20 inside 10.0.0.0/16
        extra["selextract:network"] = {"cidr": "10.0.0.0/16", "subnet": "10.0.16.0/20"}
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, required=True)
    parser.add_argument("--stack", default="phase4", help="stack file Pulumi.<stack>.yaml (default phase4)")
    parser.add_argument("--program", type=Path, help="another program file (default stacks/__main__.py)")
    args = parser.parse_args(argv)
    stack_file = ROOT / f"Pulumi.{args.stack}.yaml"
    if args.program:
        pulumi_harness.PROGRAM = args.program.resolve()
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = run_program(stack_file, extra_config=extra_config(args.servers, stack_file))
    seconds = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "servers": args.servers,
                "stack": args.stack,
                "resources": len(run.resources),
                **{key: run.count(typ) for key, typ in COUNTED.items()},
                "seconds": seconds,
                "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                "peak_rss_mb": cpu1.ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
