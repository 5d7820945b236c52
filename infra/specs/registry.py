"""The image registry of a multi-host stack, as data: where it runs, the address every host
pulls under (one truth for how a host reaches the registry), and its container.

Each image is built once on the machine running Pulumi and pushed here; hosts pull it.
The stack's own registry is CNCF Distribution on the entry host, published on that host's
private address only, with an htpasswd (bcrypt) login and its storage on a volume. Its
clients speak plain HTTP over the private network: every host's Docker engine lists the
private network in `insecure-registries` (configs/cloud-init.yaml.j2, harden.sh.j2),
the same trust Postgres, Redis and the object store already get there. Pulumi's machine
pushes through an SSH tunnel to 127.0.0.1, which Docker trusts by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import ConfigError, Settings
from infra.specs.base import ContainerSpec, Healthcheck, Mount, Upload, secret
from infra.specs.context import SpecContext
from infra.topology import Plan

REGISTRY_PORT = 5000
# The htpasswd line (user:bcrypt hash) the registry checks logins against (infra/secrets.py).
HTPASSWD_SECRET = "registryHtpasswd"
HTPASSWD_PATH = "/auth/htpasswd"
STORAGE = "/var/lib/registry"


@dataclass(frozen=True)
class Registry:
    """Where a multi-host stack's hosts pull images from."""

    address: str  # what pushed references start with: "10.0.1.10:5000", "registry.example.com/acme"
    username: str
    host: str | None  # the plan host running the stack's own registry; None: an external one

    @property
    def server(self) -> str:
        """host[:port]: what `docker login` and the Docker provider's registry auth name."""
        return self.address.split("/", 1)[0]

    @property
    def own(self) -> bool:
        return self.host is not None

    def ref(self, image: str) -> str:
        """`image` (repository:tag, as on this machine) as the hosts pull it."""
        return f"{self.address}/{image}"


def registry_for(settings: Settings, plan: Plan) -> Registry | None:
    """The registry of this stack: None on the local target (one engine builds and runs
    everything), the operator's (`registry.address`), or the stack's own on the entry host."""
    if plan.target == "local":
        return None
    if settings.registry.address:
        return Registry(settings.registry.address, settings.registry.username, None)
    entry = plan.host(plan.entry_host)
    if entry.private_ip is None:
        raise ConfigError(
            f"Pulumi.{settings.stack}.yaml: the entry host {entry.name} has no private address for the "
            "image registry; give it one, or name an external registry with selextract:registry.address"
        )
    return Registry(f"{entry.private_ip}:{REGISTRY_PORT}", settings.registry.username, entry.name)


def registry_specs(ctx: SpecContext, registry: Registry | None) -> tuple[ContainerSpec, ...]:
    """The stack's own registry container; nothing with an external registry or none."""
    if registry is None or registry.host is None:
        return ()
    host = ctx.plan.host(registry.host)
    return (
        ContainerSpec(
            name=f"{ctx.plan.stack}-{host.name}-registry",
            host=host.name,
            role=host.roles[0],  # the entry's role: the registry lives beside it
            image=ctx.settings.images.registry,
            env={
                "REGISTRY_HTTP_ADDR": f"0.0.0.0:{REGISTRY_PORT}",
                "REGISTRY_AUTH": "htpasswd",
                "REGISTRY_AUTH_HTPASSWD_REALM": "selextract",
                "REGISTRY_AUTH_HTPASSWD_PATH": HTPASSWD_PATH,
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": STORAGE,
                "REGISTRY_STORAGE_DELETE_ENABLED": "true",  # so old versions can be removed
            },
            ports=ctx.internal_port(host, REGISTRY_PORT),
            mounts=(Mount(f"{ctx.plan.stack}-{host.name}-registry-data", STORAGE),),
            uploads=(Upload(HTPASSWD_PATH, secret(HTPASSWD_SECRET)),),
            # `/` answers 200 without a login (Distribution's liveness route); wget is in
            # both the official image (busybox) and ours
            healthcheck=Healthcheck(("CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{REGISTRY_PORT}/")),
            wait_healthy=True,
            memory_mb=512,
        ),
    )
