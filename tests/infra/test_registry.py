"""Images through a registry on multi-host stacks (issue 18, item 3): app and worker built
once on this machine, pushed with the locally built service images to the stack's own
registry on the entry host (or the operator's), and pulled by every host; the local
target unchanged. Pure data first, then the program under Pulumi mocks."""

from __future__ import annotations

import ipaddress
import json
import re
import stat
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_stack_file
from infra.hosts.hardening import cloud_init, hardening_script
from infra.images import PUSH_EXIT, SshTarget, is_local_build, load_script, push_script
from infra.specs.context import SpecContext
from infra.specs.registry import HTPASSWD_PATH, HTPASSWD_SECRET, REGISTRY_PORT, Registry, registry_for, registry_specs
from infra.topology import Role, plan
from policies.rules import Context, check_stack
from tests.infra import pulumi_harness
from tests.infra.pulumi_harness import ROOT, ProgramRun, RecordingMocks, run_program
from tests.policies.stacks import as_resources, run_marked

MULTI_HOST = [p.name for p in sorted(ROOT.glob("Pulumi.*.yaml")) if load_stack_file(p).target != "local"]
HETZNER = [s for s in MULTI_HOST if load_stack_file(ROOT / s).target == "hetzner"]
CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
PULL = "docker:index/remoteImage:RemoteImage"
COMMAND = "command:local:Command"
EXTERNAL = {"selextract:registry": {"address": "registry.example.com/acme", "username": "deployer"}}
EXTERNAL_SECRET = {"registryPassword": "external-registry-token-1234"}
LOCAL_IMAGES = {
    "selextract:images": {
        "postgres": "selextract/postgres:15",
        "redis": "selextract/redis:7",
        "nodeExporter": "selextract/node-exporter:1",
        "registry": "selextract/registry:2",
    }
}


@cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="test-registry-"))


def _stack_file(stack: str, overrides: dict | None = None, secrets: dict | None = None) -> Path:
    """The stack file with `overrides` set and `secrets` stored as `pulumi config set --secret` would."""
    if not overrides and not secrets:
        return ROOT / stack
    doc = yaml.safe_load((ROOT / stack).read_text())
    doc["config"].update(overrides or {})
    doc["config"].update({f"selextract:{k}": {"secure": "v1:encrypted"} for k in secrets or {}})
    directory = _scratch() / f"{len(list(_scratch().iterdir()))}"
    directory.mkdir()
    path = directory / stack
    path.write_text(yaml.safe_dump(doc))
    return path


def _settings(stack: str, overrides: dict | None = None, secrets: dict | None = None):
    return load_stack_file(_stack_file(stack, overrides, secrets), secret_values=secrets)


# ------------------------------------------------------------------ where the registry is


@pytest.mark.parametrize("stack", MULTI_HOST)
def test_own_registry_listens_on_the_entry_hosts_private_address(stack: str) -> None:
    settings = _settings(stack)
    p = plan(settings)
    entry = p.host(p.entry_host)
    registry = registry_for(settings, p)
    assert registry == Registry(f"{entry.private_ip}:{REGISTRY_PORT}", "selextract", entry.name)
    assert ipaddress.ip_address(str(entry.private_ip)) in ipaddress.ip_network(settings.network.cidr)
    (spec,) = registry_specs(SpecContext(p, settings), registry)
    assert spec.host == entry.name
    assert [(x.internal, x.external, x.ip) for x in spec.ports] == [(5000, 5000, entry.private_ip)]
    assert [m.target for m in spec.mounts] == ["/var/lib/registry"]
    assert spec.env["REGISTRY_AUTH"] == "htpasswd" and spec.env["REGISTRY_AUTH_HTPASSWD_PATH"] == HTPASSWD_PATH
    # the login file holds nothing but the secret placeholder: the value travels as a secret
    assert [(u.path, u.content) for u in spec.uploads] == [(HTPASSWD_PATH, f"@@secret:{HTPASSWD_SECRET}@@")]
    assert spec.secrets == (HTPASSWD_SECRET,) and spec.wait_healthy


def test_local_target_has_no_registry() -> None:
    settings = _settings("Pulumi.local.yaml")
    assert registry_for(settings, plan(settings)) is None


def test_external_registry_replaces_the_own_one() -> None:
    settings = _settings("Pulumi.phase2.yaml", EXTERNAL, EXTERNAL_SECRET)
    p = plan(settings)
    registry = registry_for(settings, p)
    assert registry == Registry("registry.example.com/acme", "deployer", None)
    assert registry.server == "registry.example.com"
    assert registry.ref("selextract/app:abc") == "registry.example.com/acme/selextract/app:abc"
    assert registry_specs(SpecContext(p, settings), registry) == ()


@pytest.mark.parametrize(
    ("stack", "overrides", "secrets", "message"),
    [
        ("Pulumi.phase2.yaml", EXTERNAL, None, r"registryPassword = \(not set\): required secret missing because"),
        ("Pulumi.phase2.yaml", None, EXTERNAL_SECRET, r"registryPassword = \[secret\]: only used with an external"),
        ("Pulumi.local.yaml", EXTERNAL, EXTERNAL_SECRET, r"registry.address = registry.example.com/acme: the local"),
        ("Pulumi.phase2.yaml", {"selextract:registry": {"address": "https://x.example"}}, EXTERNAL_SECRET, "address"),
    ],
)
def test_registry_config_errors_name_the_key(stack: str, overrides, secrets, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(stack, overrides, secrets)


# ------------------------------------------------------------------ how hosts trust it


@pytest.mark.parametrize("stack", MULTI_HOST)
def test_every_hosts_engine_trusts_the_registry_on_the_private_network_only(stack: str, tmp_path: Path) -> None:
    settings = _settings(stack)
    p = plan(settings)
    address = str(registry_for(settings, p).server).split(":")[0]  # type: ignore[union-attr]
    for host in p.hosts:
        text = cloud_init(settings, host)
        (tmp_path / "user-data.yaml").write_text(text)
        subprocess.run(
            ["cloud-init", "schema", "--config-file", str(tmp_path / "user-data.yaml")], check=True, capture_output=True
        )
        files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
        script = hardening_script(settings, host)
        heredoc = re.search(r"daemon\.json >/dev/null <<'CONF'\n(.*?)\nCONF\n", script, re.S)
        assert heredoc, "the hardening script writes daemon.json"
        assert "sudo systemctl reload docker" in script.split(heredoc.group(0))[1]
        for daemon in (json.loads(files["/etc/docker/daemon.json"]), json.loads(heredoc.group(1))):
            (trusted,) = daemon["insecure-registries"]
            assert trusted == settings.network.cidr
            assert ipaddress.ip_address(address) in ipaddress.ip_network(trusted)
            assert daemon["live-restore"] is True


# ------------------------------------------------------------------ the push step, run


def _fake_tools(tmp_path: Path, ssh_fails: int = 0) -> tuple[dict[str, str], Path]:
    """`ssh` and `docker` stand-ins on PATH that log their arguments and stdin."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (tmp_path / "ssh-failures").write_text(str(ssh_fails))
    for tool, body in {
        "ssh": f'n=$(cat {tmp_path}/ssh-failures); if [ "$n" -gt 0 ]; then echo $((n - 1)) > {tmp_path}/ssh-failures; '
        "exit 255; fi",
        "docker": 'case "$*" in *login*) echo "stdin=$(cat)" >> "$LOG";; esac',
    }.items():
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> "$LOG"\n{body}\nexit 0\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "REGISTRY_PASSWORD": "pw-from-env", "HOME": "/home/op"}
    return env, log


def test_push_goes_through_an_ssh_tunnel_with_the_password_on_stdin_only(tmp_path: Path) -> None:
    registry = Registry("10.0.1.10:5000", "selextract", "app-01")
    tunnel = SshTarget("198.51.100.7", "deploy", 2222, "~/.ssh/id_ed25519")
    script = push_script("selextract/app:abc", "selextract/app:abc", registry, tunnel)
    assert "pw-from-env" not in script and "REGISTRY_PASSWORD" in script
    env, log = _fake_tools(tmp_path, ssh_fails=1)  # the first local port is taken: another is tried
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    calls = log.read_text().splitlines()
    tunnels = [c for c in calls if c.startswith("ssh -i")]
    assert len(tunnels) == 2
    forward = re.search(r"-L 127\.0\.0\.1:(\d+):10\.0\.1\.10:5000 deploy@198\.51\.100\.7$", tunnels[-1])
    assert forward and 20000 <= int(forward.group(1)) < 30000
    assert tunnels[-1].startswith("ssh -i /home/op/.ssh/id_ed25519 -p 2222 -o BatchMode=yes")
    local = f"127.0.0.1:{forward.group(1)}"
    login = next(c for c in calls if " login " in c)
    assert login.endswith(f"login --username selextract --password-stdin {local}")
    assert "stdin=pw-from-env" in calls  # the login read it from stdin; no command line holds it
    assert not any("pw-from-env" in c for c in calls if c.startswith(("ssh", "docker")))
    assert f"docker tag selextract/app:abc {local}/selextract/app:abc" in calls
    assert any(c.endswith(f"push {local}/selextract/app:abc") for c in calls)
    # the tunnel is closed and the temporary tag removed, whatever happened
    assert any(c.startswith("ssh -S") and "-O exit" in c for c in calls)
    assert f"docker image rm {local}/selextract/app:abc" in calls


def test_push_to_an_external_registry_needs_no_tunnel(tmp_path: Path) -> None:
    registry = Registry("registry.example.com/acme", "deployer", None)
    script = push_script("selextract/app:abc", "selextract/app:abc", registry, None)
    env, log = _fake_tools(tmp_path)
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    calls = log.read_text().splitlines()
    assert not any(c.startswith("ssh") for c in calls)
    assert any(c.endswith("--password-stdin registry.example.com") for c in calls)
    assert any(c.endswith("push registry.example.com/acme/selextract/app:abc") for c in calls)


def test_push_exit_status_names_the_failed_step(tmp_path: Path) -> None:
    registry = Registry("10.0.1.10:5000", "selextract", "app-01")
    script = push_script("selextract/app:abc", "selextract/app:abc", registry, SshTarget("h", "deploy", 22, "/k"))
    env, _ = _fake_tools(tmp_path, ssh_fails=99)
    proc = subprocess.run(["sh", "-c", script], env=env, timeout=30)
    assert proc.returncode == 10 and PUSH_EXIT[10] == "no SSH tunnel to the registry"


def test_registry_image_built_here_is_copied_to_its_host(tmp_path: Path) -> None:
    script = load_script("selextract/registry:2", SshTarget("198.51.100.7", "deploy", 22, "/keys/id"))
    env, log = _fake_tools(tmp_path)
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    assert sorted(log.read_text().splitlines()) == [  # both ends of the pipe run at once
        "docker save selextract/registry:2",
        "ssh -i /keys/id -p 22 -o BatchMode=yes -o StrictHostKeyChecking=accept-new deploy@198.51.100.7 docker load",
    ]


def test_only_images_made_here_go_through_the_registry() -> None:
    assert is_local_build("selextract/postgres:15") and is_local_build("selextract/app:abc")
    assert not is_local_build("postgres:15") and not is_local_build("10.0.1.10:5000/selextract/app:abc")


# ------------------------------------------------------------------ the program, under mocks

MAIN = ROOT / "stacks" / "__main__.py"


@cache
def _program() -> Path:
    """stacks/__main__.py once it calls images_for_fleet; until then, the same program with
    the image lines replaced by that call (the wiring the lead engineer adds)."""
    text = MAIN.read_text()
    if "images_for_fleet" in text:
        return MAIN
    start, end = text.find("builds_on = "), text.find("deploy_services(\n")
    args = "deploy_services(\n    specs,\n    hosts=fleet.hosts,\n    secrets=secrets,\n    images=images,"
    if start < 0 or end < 0 or args not in text:
        pytest.fail("stacks/__main__.py changed: wire infra.images.images_for_fleet into it")
    text = (
        text[:start]
        + "from infra.images import images_for_fleet\n"
        + "images = images_for_fleet(settings, the_plan, fleet.hosts, specs, secrets=secrets, version=version)\n"
        + text[end:].replace(
            args,
            "deploy_services(\n    images.specs,\n    hosts=images.hosts,\n    secrets=secrets,\n"
            "    images=images.names,",
        )
    )
    path = _scratch() / "main.py"
    path.write_text(text)
    return path


IMAGE_ID = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
VARIANTS = {
    "": (None, None),
    "external": (EXTERNAL, EXTERNAL_SECRET),
    "local-images": (LOCAL_IMAGES, None),
    "release-r2": ({"selextract:release": "r2"}, None),
}


@cache
def program(stack: str, variant: str = "", marked: bool = False) -> ProgramRun:
    """`variant`: "" as the stack file says, "external" with an external registry,
    "local-images" with service images built here (as on the machine test bed).
    `marked`: secret inputs recorded as the policy pack sees them."""
    overrides, secrets = VARIANTS[variant]
    original_program, original_call = pulumi_harness.PROGRAM, RecordingMocks.call

    def call(self, args):  # this machine's `docker image inspect` answers with an ID
        return {"stdout": IMAGE_ID} if args.token == "command:local:run" else original_call(self, args)

    pulumi_harness.PROGRAM = _program()
    RecordingMocks.call = call  # type: ignore[method-assign]
    try:
        run = run_marked if marked else run_program
        return run(_stack_file(stack, overrides, secrets), secret_values=secrets)
    finally:
        pulumi_harness.PROGRAM, RecordingMocks.call = original_program, original_call  # type: ignore[method-assign]


def _containers_by_host(run: ProgramRun) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in run.of_type(CONTAINER):
        host = next(lb["value"] for lb in r.inputs["labels"] if lb["label"] == "selextract.host")
        out.setdefault(host, []).append(r)
    return out


@pytest.mark.parametrize("stack", HETZNER)
def test_app_and_worker_are_built_once_and_every_host_pulls_them(stack: str) -> None:
    run, settings = program(stack), _settings(stack)
    p = plan(settings)
    address = registry_for(settings, p).address  # type: ignore[union-attr]
    tag = run.exports["version"]["tag"]
    builds = run.of_type(IMAGE)
    assert sorted(b.inputs["imageName"] for b in builds) == [f"selextract/app:{tag}", f"selextract/worker:{tag}"]
    assert all(b.inputs["skipPush"] for b in builds)  # pushed by the push step, through the tunnel
    pushes = {c.name: c for c in run.of_type(COMMAND) if c.name.startswith("images-push-")}
    assert sorted(pushes) == ["images-push-app", "images-push-worker"]
    assert all(f'-L "127.0.0.1:$port:{address}"' in c.inputs["create"] for c in pushes.values())
    for host, containers in _containers_by_host(run).items():
        images = {c.inputs["image"] for c in containers}
        assert not any(i.startswith("selextract/") for i in images), f"{host} runs an image only this machine has"
        built_here = sorted(i for i in images if i.startswith(f"{address}/"))
        pulls = sorted(r.inputs["name"] for r in run.of_type(PULL) if r.name.startswith(f"images-{host}-"))
        assert built_here == pulls
    workers = {pl.host for pl in p.placements_of(Role.WORKER)}
    assert workers and all(
        any(c.inputs["image"] == f"{address}/selextract/worker:{tag}" for c in _containers_by_host(run)[w])
        for w in workers
    )


@pytest.mark.parametrize("stack", MULTI_HOST)
def test_a_new_version_is_a_new_pull_not_a_replaced_one(stack: str) -> None:
    """The provider replaces a RemoteImage delete-before-replace, and Pulumi first deletes
    what depends on it: a pull replaced in place took the running API and workers down
    before the new version started (502s through the entry on the test-bed machines).
    Each version's pull is its own resource, so the old one is deleted last."""
    pulls = {v: {r.name: r.inputs["name"] for r in program(stack, v).of_type(PULL)} for v in ("", "release-r2")}
    assert any(ref.endswith("-r2") for ref in pulls["release-r2"].values())
    in_place = sorted(n for n, ref in pulls[""].items() if pulls["release-r2"].get(n, ref) != ref)
    assert in_place == [], f"pulled anew under the same resource name: {in_place}"


@pytest.mark.parametrize("stack", HETZNER)
def test_one_registry_on_the_entry_host(stack: str) -> None:
    run, settings = program(stack), _settings(stack)
    p = plan(settings)
    registries = [r for r in run.of_type(CONTAINER) if r.name.endswith("-registry")]
    assert [r.name for r in registries] == [f"{p.stack}-{p.entry_host}-registry"]
    (registry,) = registries
    entry = p.host(p.entry_host)
    assert registry.inputs["ports"] == [{"internal": 5000.0, "external": 5000.0, "ip": entry.private_ip}]
    assert registry.inputs["image"] == settings.images.registry == "registry:2"
    assert run.named("docker:index/volume:Volume", f"{p.stack}-{p.entry_host}-registry-data")


def test_external_registry_runs_no_registry_and_pushes_there() -> None:
    run = program("Pulumi.phase3.yaml", "external")
    assert not [r for r in run.of_type(CONTAINER) if r.name.endswith("-registry")]
    assert not [r for r in run.resources if r.name == "registryPassword"]  # the operator's, not generated
    tag = run.exports["version"]["tag"]
    workers = [r for r in run.of_type(CONTAINER) if re.search(r"-worker-\d+$", r.name)]
    assert workers and {w.inputs["image"] for w in workers} == {f"registry.example.com/acme/selextract/worker:{tag}"}
    push = run.named(COMMAND, "images-push-worker").inputs["create"]
    assert "ssh" not in push and "server=registry.example.com" in push


def test_service_images_built_here_reach_their_hosts_through_the_registry() -> None:
    run = program("Pulumi.phase2.yaml", "local-images")
    settings = _settings("Pulumi.phase2.yaml", LOCAL_IMAGES)
    address = registry_for(settings, plan(settings)).address  # type: ignore[union-attr]
    suffix = IMAGE_ID.removeprefix("sha256:")[:12]
    postgres = next(r for r in run.of_type(CONTAINER) if r.name.endswith("-postgres-1"))
    # the local image's ID is in the pushed tag: a rebuilt image is a new reference
    assert postgres.inputs["image"] == f"{address}/selextract/postgres:15-{suffix}"
    push = run.named(COMMAND, "images-push-postgres")
    assert IMAGE_ID in push.inputs["triggers"]
    assert 'docker tag selextract/postgres:15 "$pushed"' in push.inputs["create"]
    assert f"/selextract/postgres:15-{suffix}" in push.inputs["create"]
    exporters = [r for r in run.of_type(CONTAINER) if "node-exporter" in r.name]
    assert exporters and {e.inputs["image"] for e in exporters} == {f"{address}/selextract/node-exporter:1-{suffix}"}
    pulls = {r.inputs["name"] for r in run.of_type(PULL)}
    assert f"{address}/selextract/node-exporter:1-{suffix}" in pulls
    # the registry's own image, built here, is copied to the entry host before it starts
    load = run.named(COMMAND, "images-registry-image").inputs["create"]
    assert "docker save selextract/registry:2 | ssh" in load and load.endswith("docker load\n")
    assert run.named(CONTAINER, "phase2-app-01-registry").inputs["image"] == "selextract/registry:2"


@pytest.mark.parametrize("stack", [*HETZNER, "Pulumi.phase3.yaml:external"])
def test_registry_password_is_only_ever_a_secret(stack: str) -> None:
    name, _, variant = stack.partition(":")
    run = program(name, variant)
    password = EXTERNAL_SECRET["registryPassword"] if variant else None
    if password is None:
        (generated,) = [r for r in run.resources if r.type.endswith("RandomPassword") and r.name == "registryPassword"]
        password = generated.outputs["result"]
    carrying = [(t, n, path, secret) for t, n, path, secret, value in run.leaf_inputs if password in value]
    assert carrying, "the password reaches the push steps"
    assert all(secret for *_, secret in carrying), [c for c in carrying if not c[3]]
    assert {(t, path) for t, _, path, _ in carrying} >= {(COMMAND, ".environment.REGISTRY_PASSWORD")}
    assert password not in repr(run.exports)
    if not variant:
        htpasswd = [x for x in run.leaf_inputs if x[2] == ".uploads[0].content" and x[1].endswith("-registry")]
        assert htpasswd and all(secret for _, _, _, secret, _ in htpasswd)


@pytest.mark.parametrize(("stack", "variant"), [("Pulumi.phase2.yaml", ""), ("Pulumi.phase3.yaml", "external"),
                                                ("Pulumi.phase2.yaml", "local-images")])  # fmt: skip
def test_policy_pack_accepts_the_registry_resources(stack: str, variant: str) -> None:
    overrides, secrets = VARIANTS[variant]
    ctx = Context(stack=yaml.safe_load(_stack_file(stack, overrides, secrets).read_text())["config"])
    resources = as_resources(program(stack, variant, marked=True), stack.removeprefix("Pulumi.").removesuffix(".yaml"))
    ours = {
        r.urn for r in resources if r.name.startswith("images-") or r.name.endswith(("-registry", "-registry-data"))
    }
    assert len(ours) >= 4
    stack_rules = {v.message for found in check_stack(resources, ctx).values() for v in found if v.urn is None}
    assert [v for found in check_stack(resources, ctx).values() for v in found if v.urn in ours] == []
    assert not [m for m in stack_rules if "registry" in m or "images-" in m]


def test_local_target_builds_on_its_engine_with_no_registry() -> None:
    run = program("Pulumi.local.yaml")
    assert sorted(r.name for r in run.of_type(IMAGE)) == ["images-local-app", "images-local-worker"]
    assert not run.of_type(PULL) and not [r for r in run.of_type(COMMAND) if r.name.startswith("images-")]
    assert not [r for r in run.resources if "registry" in r.name.lower()]


def test_providers_pull_with_the_registry_login_once_wired() -> None:
    """Each host's Docker provider carries the login (infra.images.registry_auth)."""
    if "registry_auth" not in MAIN.read_text() and "registry_auth" not in (ROOT / "infra/hosts/base.py").read_text():
        pytest.skip("not wired yet: fleet_for(..., registry_auth=registry_auth(settings, the_plan, secrets))")
    run = program("Pulumi.phase2.yaml")
    hosts = [r for r in run.of_type("pulumi:providers:docker") if r.name != "images-local-docker"]
    for provider in hosts:  # provider inputs reach the engine as JSON text
        auth = provider.inputs.get("registryAuth")
        (login,) = json.loads(auth) if isinstance(auth, str) else auth or [None]
        assert login and login["address"] == "10.0.1.10:5000" and login["username"] == "selextract"
    logins = [x[3] for x in run.leaf_inputs if x[0] == "pulumi:providers:docker" and x[2] == ".registry_auth"]
    assert len(logins) >= len(hosts) and all(logins)  # the login travels as a secret
