"""Changed uploads of a running container, applied in place (ContainerSpec.config_reload).

The files travel as one tar archive (base64 on stdin: they may hold the bootstrap key, so
never on a command line), are unpacked over the old ones, checked by the service's own
validator and, only if it accepts them, reloaded; otherwise the previous files come back
and `pulumi up` fails with the validator's message while the proxy keeps serving."""

from __future__ import annotations

import base64
import io
import shlex
import tarfile

import pulumi

from infra.services.base import resolve
from infra.services.rotation import PasswordSyncArgs, sync_command
from infra.specs.base import ConfigReload, ContainerSpec

# {check} / {reload} come from the spec. Archive members are regular files only (no
# directory entries), so unpacking over / never touches an existing directory's mode.
RELOAD_SCRIPT = """set -eu
new=$(mktemp -d) old=$(mktemp -d)
trap 'rm -rf "$new" "$old"' EXIT
base64 -d | tar -x -C "$new"
files=$(cd "$new" && find . -type f)
i=0
until {check} >/dev/null 2>&1; do  # a container just created may still be in its entrypoint
  i=$((i + 1)); [ "$i" -lt 30 ] || break; sleep 1
done
for f in $files; do
  if [ -e "/$f" ]; then mkdir -p "$old/$(dirname "$f")"; cp -p "/$f" "$old/$f"; fi
done
tar -c -C "$new" $files | tar -x -C /
if ! {check}; then
  [ -z "$(ls -A "$old")" ] || (cd "$old" && tar -c $(find . -type f) | tar -x -C /)
  echo "the new configuration was refused by: {check}; the running one is kept" >&2
  exit 1
fi
{reload}
"""


def archive(files: list[tuple[str, str, bool]]) -> str:
    """A deterministic tar of (path, content, executable), base64: same files, same text,
    so the step runs only when a file really changed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, content, executable in sorted(files):
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o755 if executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode() + "\n"


def reload_script(reload: ConfigReload) -> str:
    return RELOAD_SCRIPT.format(check=reload.check, reload=reload.reload)


class ConfigReloadStep(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: PasswordSyncArgs, spec: ContainerSpec, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("selextract:service:ConfigReload", name, None, opts)
        assert spec.config_reload is not None
        paths = [(u.path, u.executable) for u in spec.uploads]
        contents = [resolve(u.content, args.secrets) for u in spec.uploads]
        stdin = pulumi.Output.secret(
            pulumi.Output.all(*contents).apply(
                lambda values: archive([(p, v, x) for (p, x), v in zip(paths, values, strict=True)])
            )
        )
        script = f"docker exec -i -u 0 {args.container_name} sh -c {shlex.quote(reload_script(spec.config_reload))}"
        child = pulumi.ResourceOptions(parent=self, depends_on=[args.container])
        self.step = sync_command(name, args.host, script, stdin, [stdin], child)
        self.register_outputs({})
