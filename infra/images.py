"""App and worker images, and how every image reaches the Docker engines that run it.

The tag is a hash of everything that goes into the image, so a code change gives a new
tag, and the new tag is what replaces the containers; an unchanged tree is a no-op.

Local target: the one engine builds the app and worker images and runs everything (no
registry). Multi-host stacks (`hetzner`, `servers`): the app and worker images are built
once, on the Docker engine of the machine running Pulumi, and pushed, with every service
image built here (`selextract/*`, scripts/build-images.sh), to the stack's registry
(infra/specs/registry.py); each host pulls what its containers run. An added worker
server costs one pull, not a build. Images named elsewhere (official ones) are pulled
from their own registries by the hosts, as before.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.config import REGISTRY_SECRET, Settings
from infra.hosts.base import Host
from infra.secrets import StackSecrets
from infra.services.base import Declared, ServiceArgs
from infra.services.registry import Registry as RegistryService
from infra.specs.base import ContainerSpec
from infra.specs.context import BUILD_APP, BUILD_WORKER, SpecContext
from infra.specs.registry import Registry, registry_for, registry_specs
from infra.topology import Plan

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_SOURCES = ("common", "app", "worker", "requirements")
KINDS = {"app": "app/Dockerfile", "worker": "worker/Dockerfile"}
# Images made on this machine (the app/worker builds, scripts/build-images.sh) are named so.
LOCAL_NAMESPACE = "selextract/"


def source_hash(root: Path = REPO_ROOT) -> str:
    digest = hashlib.sha256()
    for top in IMAGE_SOURCES:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit(root: Path = REPO_ROOT) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class ImageVersion:
    tag: str
    commit: str
    pinned: bool = False  # an existing image is reused; nothing is built


def current_version(release: str | None = None, pinned_tag: str | None = None) -> ImageVersion:
    """The app/worker image version this deploy runs: a pinned tag (rollback), or the
    hash of the sources, suffixed by the operator's release label when one is set."""
    if pinned_tag:
        return ImageVersion(tag=pinned_tag, commit="pinned", pinned=True)
    tag = source_hash()
    return ImageVersion(tag=f"{tag}-{release}" if release else tag, commit=git_commit())


def pinned_images(version: ImageVersion) -> dict[str, str]:
    return {kind: f"selextract/{kind}:{version.tag}" for kind in KINDS}


class AppImages(pulumi.ComponentResource):
    """The app and worker images on one Docker engine."""

    def __init__(
        self,
        name: str,
        *,
        provider: docker.Provider,
        version: ImageVersion,
        base_image: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:index:AppImages", name, None, opts)
        self.names: dict[str, pulumi.Output[str]] = {}
        self.images: dict[str, docker.Image] = {}
        for kind, dockerfile in KINDS.items():
            image = docker.Image(
                f"{name}-{kind}",
                image_name=f"selextract/{kind}:{version.tag}",
                build=docker.DockerBuildArgs(
                    context=str(REPO_ROOT),
                    dockerfile=str(REPO_ROOT / dockerfile),
                    args={"GIT_COMMIT": version.commit, "BASE_IMAGE": base_image},
                    builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
                    platform="linux/amd64",
                ),
                skip_push=True,
                # The tag already says what is inside; a new commit that leaves the image
                # sources alone must not rebuild (the label keeps the first commit).
                opts=pulumi.ResourceOptions(parent=self, provider=provider, ignore_changes=["build.args.GIT_COMMIT"]),
            )
            self.images[kind] = image
            self.names[kind] = image.image_name
        self.register_outputs({"images": self.names})


def is_local_build(image: str) -> bool:
    """Made on this machine (no registry host in the name): hosts get it through the registry."""
    return image.startswith(LOCAL_NAMESPACE)


def _repository_tag(image: str) -> tuple[str, str]:
    repository, colon, tag = image.rpartition(":")
    return (repository, tag) if colon and "/" not in tag else (image, "latest")


def _short(image: str) -> str:
    return _repository_tag(image)[0].rsplit("/", 1)[-1]


def local_image_id(image: str) -> str | None:
    """The ID of `image` on this machine's Docker engine, asked at every preview and up
    (a `command:local:run` call), so a rebuilt image with the same tag is pushed again."""
    quoted = shlex.quote(image)
    missing = shlex.quote(f"{image} is not on this machine's Docker engine; build it with scripts/build-images.sh")
    result = command.local.run(
        command=f"docker image inspect --format '{{{{.Id}}}}' {quoted} || {{ echo {missing} >&2; exit 1; }}"
    )
    return (result.stdout or "").strip() or None


def registry_auth(settings: Settings, plan: Plan, secrets: StackSecrets) -> list[docker.ProviderRegistryAuthArgs]:
    """The login every host's Docker provider pulls with (its `registry_auth`); none on the
    local target. The password stays a Pulumi secret."""
    registry = registry_for(settings, plan)
    if registry is None:
        return []
    return [
        docker.ProviderRegistryAuthArgs(
            address=registry.server, username=registry.username, password=secrets.get(REGISTRY_SECRET)
        )
    ]


@dataclass(frozen=True)
class SshTarget:
    """How this machine reaches a host's shell: the deploy user, as the Docker provider does."""

    address: str
    user: str
    port: int
    key_path: str

    def command(self, *options: str) -> str:
        path = self.key_path
        key = f'"$HOME"/{shlex.quote(path[2:])}' if path.startswith("~/") else shlex.quote(path)
        opts = " ".join(options)
        return (
            f"ssh -i {key} -p {self.port} -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
            f"{opts + ' ' if opts else ''}{shlex.quote(f'{self.user}@{self.address}')}"
        )


PUSH_EXIT = {10: "no SSH tunnel to the registry", 11: "the registry refused the login", 12: "the push failed"}


def push_script(source: str, target: str, registry: Registry, tunnel: SshTarget | None) -> str:
    """Shell script pushing `source` (this machine's engine) to the registry as `target`.

    The password comes from $REGISTRY_PASSWORD (a secret environment value) through
    `--password-stdin` into a throwaway Docker config, never on a command line. The stack's
    own registry listens on the private network only: it is reached through an SSH tunnel
    to the entry host, bound to 127.0.0.1, an address Docker allows plain HTTP to.
    The exit status says what failed (PUSH_EXIT): a secret command's output stays hidden."""
    path = registry.address[len(registry.server) :]
    close = '[ -n "$tunnel" ] && ssh -S "$tmp/ssh" -O exit registry 2>/dev/null; ' if tunnel else ""
    lines = [
        "set -u",
        'tmp=$(mktemp -d) pushed="" tunnel=""',
        f'cleanup() {{ {close}[ -n "$pushed" ] && docker image rm "$pushed" >/dev/null 2>&1; rm -rf "$tmp"; }}',
        "trap cleanup EXIT",
    ]
    if tunnel is not None:
        forward = f'-o ExitOnForwardFailure=yes -M -S "$tmp/ssh" -f -N -L "127.0.0.1:$port:{registry.address}"'
        lines += [
            'server=""',
            "for try in 1 2 3 4 5; do  # a free local port below the ephemeral range",
            "  port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 10000))",
            f'  if {tunnel.command(forward)}; then server="127.0.0.1:$port" tunnel=1; break; fi',
            "done",
            '[ -n "$server" ] || exit 10',
        ]
    else:
        lines.append(f"server={shlex.quote(registry.server)}")
    lines += [
        f'printf "%s" "$REGISTRY_PASSWORD" | docker --config "$tmp" login --username {shlex.quote(registry.username)} '
        '--password-stdin "$server" >/dev/null 2>&1 || exit 11',
        f'pushed="$server"{shlex.quote(f"{path}/{target}")}',
        f'docker tag {shlex.quote(source)} "$pushed" || {{ pushed=""; exit 12; }}',
        'docker --config "$tmp" push "$pushed" >/dev/null || exit 12',
    ]
    return "\n".join(lines) + "\n"


def load_script(image: str, target: SshTarget) -> str:
    """Copies `image` from this machine's engine to a host's engine, with no registry:
    how the stack's own registry image gets there when it is built here."""
    return f"set -eu\ndocker save {shlex.quote(image)} | {target.command()} docker load\n"


@dataclass
class PlacedImages:
    """What the service layer needs: specs whose images name what each host can get, the
    hosts (their `ready` now holds the pulls their containers wait for), and the app and
    worker image per Docker engine."""

    specs: tuple[ContainerSpec, ...]
    hosts: dict[str, Host]
    names: dict[str, dict[str, pulumi.Input[str]]]
    registry: Registry | None = None


def images_for_fleet(
    settings: Settings,
    plan: Plan,
    hosts: Mapping[str, Host],
    specs: Sequence[ContainerSpec],
    *,
    secrets: StackSecrets,
    version: ImageVersion,
) -> PlacedImages:
    """Local target: the app/worker images built on the engine that runs them, as before.
    Multi-host stacks: built once here, through the stack's registry to every host."""
    registry = registry_for(settings, plan)
    if registry is None:
        return PlacedImages(tuple(specs), dict(hosts), _engine_builds(settings, hosts, specs, version))
    images = RegistryImages(
        "images",
        settings=settings,
        plan=plan,
        hosts=hosts,
        specs=specs,
        secrets=secrets,
        version=version,
        registry=registry,
    )
    return images.placed


def _engine_builds(
    settings: Settings, hosts: Mapping[str, Host], specs: Sequence[ContainerSpec], version: ImageVersion
) -> dict[str, dict[str, pulumi.Input[str]]]:
    builds_on = {hosts[s.host].engine: hosts[s.host] for s in specs if s.image in (BUILD_APP, BUILD_WORKER)}
    return {
        engine: dict(pinned_images(version))
        if version.pinned
        else dict(
            AppImages(
                f"images-{engine}",
                provider=host.provider,
                version=version,
                base_image=settings.images.python_base,
                opts=pulumi.ResourceOptions(depends_on=host.ready),
            ).names
        )
        for engine, host in builds_on.items()
    }


class RegistryImages(pulumi.ComponentResource):
    """The stack's own registry (unless an external one is named), the app/worker builds on
    this machine, one push per image made here, and on each host one pull per such image
    its containers run."""

    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        plan: Plan,
        hosts: Mapping[str, Host],
        specs: Sequence[ContainerSpec],
        secrets: StackSecrets,
        version: ImageVersion,
        registry: Registry,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:index:RegistryImages", name, None, opts)
        self._name, self._settings, self._registry, self._hosts = name, settings, registry, hosts
        self._password = secrets.get(REGISTRY_SECRET)
        self.service = self._own_registry(plan, secrets)
        up: list[pulumi.Resource] = list(self.service.containers.values()) if self.service else []

        targets: dict[str, str] = {}  # image as the specs name it -> repository:tag in the registry
        pushed: dict[str, list[pulumi.Resource]] = {}  # ... -> what a pull of it waits for
        wanted = {s.image for s in specs}
        built = self._builds(version, [k for k in KINDS if f"build:{k}" in wanted])
        for kind in KINDS:
            key = f"build:{kind}"
            if key in wanted:
                targets[key] = f"selextract/{kind}:{version.tag}"
                build = built.get(kind)
                pushed[key] = [self._push(targets[key], targets[key], [build, *up], [])] if build else up
        for image in sorted(i for i in wanted if is_local_build(i)):
            image_id = local_image_id(image)
            repository, tag = _repository_tag(image)
            # the ID in the tag: a rebuilt image is a new reference, pulled and run anew
            targets[image] = f"{repository}:{tag}-{image_id.removeprefix('sha256:')[:12]}" if image_id else image
            pushed[image] = [self._push(image, targets[image], up, [image_id or image])]

        self.pulls: dict[str, dict[str, docker.RemoteImage]] = {}
        names: dict[str, dict[str, pulumi.Input[str]]] = {}
        placed_hosts: dict[str, Host] = {}
        for host_name, host in hosts.items():
            mine = sorted({s.image for s in specs if s.host == host_name and s.image in targets})
            # One pull resource per version: the provider replaces a RemoteImage delete-
            # before-replace, and Pulumi then deletes what depends on it first, i.e. the
            # running API and workers before their successors start. A new version is a new
            # pull; the old one is deleted last, after the old containers.
            pulls = {
                image: docker.RemoteImage(
                    f"{name}-{host_name}-{_short(targets[image])}-{_repository_tag(targets[image])[1]}",
                    name=registry.ref(targets[image]),
                    keep_locally=True,  # a running container of the previous version may still use it
                    opts=pulumi.ResourceOptions(
                        parent=self, provider=host.provider, depends_on=[*host.ready, *pushed[image]]
                    ),
                )
                for image in mine
            }
            self.pulls[host_name] = pulls
            placed_hosts[host_name] = replace(host, ready=[*host.ready, *pulls.values()])
            kinds = {kind: pulls[f"build:{kind}"].name for kind in KINDS if f"build:{kind}" in pulls}
            if kinds:
                names.setdefault(host.engine, {}).update(kinds)
        placed_specs = tuple(
            replace(s, image=registry.ref(targets[s.image])) if is_local_build(s.image) else s for s in specs
        )
        self.placed = PlacedImages(placed_specs, placed_hosts, names, registry)
        self.register_outputs({"registry": registry.address})

    def _ssh(self, host: Host) -> pulumi.Output[SshTarget]:
        ssh = self._settings.ssh
        return pulumi.Output.from_input(host.public_ip).apply(
            lambda address: SshTarget(str(address), ssh.user, ssh.port, ssh.private_key_path)
        )

    def _own_registry(self, plan: Plan, secrets: StackSecrets) -> RegistryService | None:
        """The registry container on its host; a registry image built here is first
        copied there (docker save | ssh docker load), since no registry runs yet."""
        registry = self._registry
        if registry.host is None:
            return None
        host = self._hosts[registry.host]
        ready = list(host.ready)
        image = self._settings.images.registry
        if is_local_build(image):
            ready.append(
                command.local.Command(
                    f"{self._name}-registry-image",
                    create=self._ssh(host).apply(lambda target: load_script(image, target)),
                    triggers=[local_image_id(image) or image],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=host.ready),
                )
            )
        return RegistryService(
            f"{self._name}-registry",
            ServiceArgs(
                specs=registry_specs(SpecContext(plan, self._settings), registry),
                hosts={host.name: replace(host, ready=ready)},
                secrets=secrets,
                images={},
                stack=self._settings.stack,
                declared=Declared(),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _builds(self, version: ImageVersion, kinds: list[str]) -> dict[str, docker.Image]:
        """The app/worker images, on this machine's engine (DOCKER_HOST or the local
        socket); none for a pinned version, which the registry already holds."""
        if version.pinned or not kinds:
            return {}
        local = docker.Provider(f"{self._name}-local-docker", opts=pulumi.ResourceOptions(parent=self))
        images = AppImages(
            f"{self._name}-build",
            provider=local,
            version=version,
            base_image=self._settings.images.python_base,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return {kind: images.images[kind] for kind in kinds}

    def _push(
        self, source: str, target: str, depends_on: Sequence[pulumi.Resource], triggers: list[pulumi.Input[str]]
    ) -> command.local.Command:
        """One image to the registry; again whenever its content or the registry container
        changes (a new registry starts empty)."""
        registry = self._registry
        if registry.host is None:
            script: pulumi.Input[str] = push_script(source, target, registry, None)
        else:
            script = self._ssh(self._hosts[registry.host]).apply(
                lambda tunnel: push_script(source, target, registry, tunnel)
            )
        containers = self.service.containers.values() if self.service else ()
        return command.local.Command(
            f"{self._name}-push-{_short(target)}",
            create=script,
            environment={"REGISTRY_PASSWORD": self._password},
            triggers=[target, *triggers, *(c.id for c in containers)],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
