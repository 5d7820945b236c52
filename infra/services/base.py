"""Declares the containers of a service from its specs; the typed service components in
this package differ only in what they are called and which specs they get."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from infra.hosts.base import Host
from infra.secrets import StackSecrets
from infra.specs.base import SECRET_MARK, ContainerSpec, secret_names
from infra.specs.context import BUILD_APP, BUILD_WORKER


def resolve(text: str, secrets: StackSecrets) -> pulumi.Input[str]:
    """`text` with secret placeholders filled in; a Pulumi secret if it held any."""
    names = list(dict.fromkeys(SECRET_MARK.findall(text)))
    if not names:
        return text
    values = [secrets.get(n) for n in names]

    def fill(resolved: list[str]) -> str:
        table = dict(zip(names, resolved, strict=True))
        return SECRET_MARK.sub(lambda m: table[m.group(1)], text)

    return pulumi.Output.secret(pulumi.Output.all(*values).apply(fill))


@dataclass
class Declared:
    """Containers and volumes declared so far in this program, so services can depend on
    each other's containers and share volumes on one engine."""

    containers: dict[str, pulumi.Resource] = field(default_factory=dict)
    volumes: dict[str, docker.Volume] = field(default_factory=dict)


class UnresolvedDependency(LookupError):
    """A spec names a container no service declared before it: a silently dropped
    dependency would let it start before what it needs."""


def dependencies(spec: ContainerSpec, declared: Declared) -> list[pulumi.Resource]:
    """The declared resources `spec.depends_on` names, in order; raises naming the missing ones."""
    missing = [d for d in spec.depends_on if d not in declared.containers]
    if missing:
        raise UnresolvedDependency(
            f"container {spec.name} (host {spec.host}) depends on {', '.join(missing)}, which no service "
            "declared before it: a container or password-sync step of that name must be declared first"
        )
    return [declared.containers[d] for d in spec.depends_on]


@dataclass
class ServiceArgs:
    specs: Sequence[ContainerSpec]
    hosts: Mapping[str, Host]
    secrets: StackSecrets
    # engine -> {"app": image name, "worker": image name}
    images: Mapping[str, Mapping[str, pulumi.Input[str]]]
    stack: str
    declared: Declared
    # Called with each container as soon as it is declared (password-sync steps), so a
    # later container of the same service can depend on what it adds.
    after_each: Callable[[ContainerSpec, docker.Container], None] | None = None


class Service(pulumi.ComponentResource):
    TYPE = "selextract:service:Service"

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, opts)
        self.containers: dict[str, docker.Container] = {}
        created: dict[str, docker.Container] = {}
        self.args = args
        for spec in args.specs:
            host = args.hosts[spec.host]
            volumes = self._volumes(spec, host, args)
            deps: list[pulumi.Resource] = [*host.ready, *volumes]
            deps += dependencies(spec, args.declared)
            container = self._container(spec, host, args, deps)
            created[spec.logical_name] = container
            args.declared.containers[spec.logical_name] = container
            if args.after_each is not None:
                args.after_each(spec, container)
        self.containers = created
        self.register_outputs({"containers": [c.name for c in created.values()]})

    def _volumes(self, spec: ContainerSpec, host: Host, args: ServiceArgs) -> list[docker.Volume]:
        out = []
        for mount in spec.mounts:
            key = f"{host.engine}/{mount.volume}"
            if key in args.declared.volumes:
                out.append(args.declared.volumes[key])
                continue
            path = host.data_paths.get(spec.role.value)
            volume = docker.Volume(
                mount.volume,
                name=mount.volume,
                driver_opts={"type": "none", "o": "bind", "device": path} if path is not None else None,
                labels=[docker.VolumeLabelArgs(label="selextract.stack", value=args.stack)],
                # Data outlives container replacement; only `pulumi destroy` removes it.
                opts=pulumi.ResourceOptions(parent=self, provider=host.provider),
            )
            args.declared.volumes[key] = volume
            out.append(volume)
        return out

    def _docker_name(self, spec: ContainerSpec, envs: list[pulumi.Input[str]]) -> pulumi.Input[str]:
        """Versioned containers start beside their predecessor, so every replacement needs a
        new name: the version, plus a generation that changes whenever the environment
        does (e.g. a rotated password), derived without exposing any secret."""
        if not spec.versioned:
            return spec.name

        def digest(values: list[str]) -> str:
            return hashlib.sha256("\n".join([*values, *spec.command]).encode()).hexdigest()

        generation = random.RandomId(
            f"{spec.logical_name}-generation",
            byte_length=2,
            keepers={"config": pulumi.Output.secret(pulumi.Output.all(*envs).apply(digest))},
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.concat(spec.name, "-g", generation.hex)

    def _image(self, spec: ContainerSpec, host: Host, args: ServiceArgs) -> pulumi.Input[str]:
        if spec.image in (BUILD_APP, BUILD_WORKER):
            return args.images[host.engine][spec.image.removeprefix("build:")]
        return spec.image

    @staticmethod
    def _command(spec: ContainerSpec, secrets: StackSecrets) -> pulumi.Input[list[str]] | None:
        """The command, secret as a whole when any argument is: the docker provider keeps
        list elements of its state in plain text even when they came in as secrets."""
        if not spec.command:
            return None
        parts = [resolve(c, secrets) for c in spec.command]
        if any(secret_names(c) for c in spec.command):
            return pulumi.Output.secret(pulumi.Output.all(*parts))
        return parts

    def _container(
        self, spec: ContainerSpec, host: Host, args: ServiceArgs, deps: list[pulumi.Resource]
    ) -> docker.Container:
        secrets = args.secrets
        health = spec.healthcheck
        envs = [resolve(f"{k}={v}", secrets) for k, v in spec.env.items()]
        return docker.Container(
            spec.logical_name,
            name=self._docker_name(spec, envs),
            image=self._image(spec, host, args),
            command=self._command(spec, secrets),
            entrypoints=list(spec.entrypoint) or None,
            envs=envs or None,
            ports=[docker.ContainerPortArgs(internal=p.internal, external=p.external, ip=p.ip) for p in spec.ports]
            or None,
            mounts=[
                *(docker.ContainerMountArgs(type="volume", source=m.volume, target=m.target) for m in spec.mounts),
                *(
                    docker.ContainerMountArgs(
                        type="bind",
                        source=m.source,
                        target=m.target,
                        read_only=m.read_only,
                        bind_options=docker.ContainerMountBindOptionsArgs(propagation=m.propagation)
                        if m.propagation
                        else None,
                    )
                    for m in spec.host_mounts
                ),
            ]
            or None,
            tmpfs={path: "rw,size=64m,mode=1777" for path in spec.tmpfs} or None,
            uploads=[
                docker.ContainerUploadArgs(file=u.path, content=resolve(u.content, secrets), executable=u.executable)
                for u in spec.uploads
            ]
            or None,
            hosts=[docker.ContainerHostArgs(host=h, ip=ip) for h, ip in spec.extra_hosts.items()] or None,
            hostname=spec.hostname,
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=host.network.name, aliases=[spec.name, *spec.aliases])
            ],
            cpus=str(spec.cpus) if spec.cpus else None,
            memory=spec.memory_mb,
            # No swap beyond the limit (Docker would default to twice the limit, and the
            # provider would then report drift on every preview).
            memory_swap=spec.memory_mb,
            user=spec.user,
            pid_mode="host" if spec.pid_host else None,
            read_only=spec.read_only,
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=list(health.test),
                interval=f"{health.interval_s}s",
                timeout=f"{health.timeout_s}s",
                retries=health.retries,
                start_period=f"{health.start_period_s}s",
            )
            if health
            else None,
            wait=spec.wait_healthy or None,
            wait_timeout=180 if spec.wait_healthy else None,
            restart="no" if spec.one_shot else "unless-stopped",
            must_run=not spec.one_shot,
            attach=spec.one_shot or None,
            logs=spec.one_shot or None,
            destroy_grace_seconds=spec.stop_grace_s,
            labels=[
                docker.ContainerLabelArgs(label="selextract.stack", value=args.stack),
                docker.ContainerLabelArgs(label="selextract.role", value=spec.role.value),
                docker.ContainerLabelArgs(label="selextract.host", value=spec.host),
            ],
            log_opts={"max-size": "50m", "max-file": "5"},
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=host.provider,
                depends_on=deps,
                # Versioned containers (API, workers) start beside the old version, which
                # is removed once the new one is healthy; others keep their fixed name and
                # must go first (their ports and volumes are exclusive).
                delete_before_replace=not spec.versioned,
                ignore_changes=["envs"] if spec.ignore_env_changes else None,
            ),
        )
