"""App and worker images, built by Pulumi on each target engine (no registry needed).

The tag is a hash of everything that goes into the image, so a code change gives a new
tag, and the new tag is what replaces the containers; an unchanged tree is a no-op.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_SOURCES = ("common", "app", "worker", "requirements")
KINDS = {"app": "app/Dockerfile", "worker": "worker/Dockerfile"}


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
            self.names[kind] = image.image_name
        self.register_outputs({"images": self.names})
