"""The real Pulumi program, run per stack file under `pulumi.runtime.set_mocks`: the
resource graph, firewall rules, placement and network membership, and that secrets
never travel in plain text."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

import pytest

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.topology import Role, plan
from tests.infra.pulumi_harness import ROOT, ProgramRun, run_program

STACKS = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))
HETZNER_STACKS = [s for s in STACKS if load_stack_file(ROOT / s).target == "hetzner"]
SERVERS_STACKS = [s for s in STACKS if load_stack_file(ROOT / s).target == "servers"]
SERVER = "hcloud:index/server:Server"
CONTAINER = "docker:index/container:Container"


@cache
def program(stack_file: str) -> ProgramRun:
    return run_program(ROOT / stack_file)


def expected_plan(stack_file: str):
    return plan(load_stack_file(ROOT / stack_file))


@pytest.mark.parametrize("stack_file", STACKS)
def test_containers_match_the_plan(stack_file: str) -> None:
    run, p = program(stack_file), expected_plan(stack_file)
    names = {r.name for r in run.of_type(CONTAINER)}  # stable Pulumi names; docker names add the version
    api = {
        p.container_name(pl.host, Role.API, i) for pl in p.placements_of(Role.API) for i in range(1, pl.containers + 1)
    }
    workers = {n for n in names if re.search(r"-worker-\d+$", n)}
    assert api <= names
    assert len(workers) == p.worker_containers
    assert all(r.inputs["name"].startswith(f"{p.stack}-") for r in run.of_type(CONTAINER))
    version = run.exports["version"]["tag"]
    assert all(
        re.fullmatch(rf"{r.name}-{version}-g[0-9a-f]{{4}}", r.inputs["name"])
        for r in run.of_type(CONTAINER)
        if r.name in api | workers
    )
    # app and worker images are built once, on this machine's engine (the local target's
    # hosts share it; remote hosts pull them from the stack's registry)
    assert run.count("docker:index/image:Image") == 2


@pytest.mark.parametrize("stack_file", STACKS)
def test_no_secret_in_plain_text(stack_file: str) -> None:
    run = program(stack_file)
    assert run.secret_values, "the program generated no passwords?"
    leaks = [
        (typ, name, path)
        for typ, name, path, is_secret, value in run.leaf_inputs
        if not is_secret and any(s in value for s in run.secret_values)
    ]
    assert leaks == []
    carrying = [x for x in run.leaf_inputs if any(s in x[4] for s in run.secret_values)]
    assert len(carrying) >= 5, "secrets should reach the containers (as secrets)"
    # the one secret output: the backup key, for ops only (encrypted in state like any secret)
    assert run.secret_exports == {"objectStoreBackupKey"}
    plain = {k: v for k, v in run.exports.items() if k not in run.secret_exports}
    assert not any(s in repr(plain) for s in run.secret_values)


@pytest.mark.parametrize("stack_file", HETZNER_STACKS)
def test_every_server_in_private_network_placement_and_firewall(stack_file: str) -> None:
    run, p = program(stack_file), expected_plan(stack_file)
    servers = run.of_type(SERVER)
    cloud_hosts = [h for h in p.hosts if h.kind == "cloud"]
    assert len(servers) == len(cloud_hosts)
    ids = {r.name.removeprefix("hetzner-"): r for r in servers}
    server_ids = {int(_id_of(run, r)) for r in servers}

    attached = {r.inputs["serverId"] for r in run.of_type("hcloud:index/serverNetwork:ServerNetwork")}
    assert attached == server_ids
    ips = {r.inputs["ip"] for r in run.of_type("hcloud:index/serverNetwork:ServerNetwork")}
    assert ips == {h.private_ip for h in cloud_hosts}

    fw_members = [
        i for r in run.of_type("hcloud:index/firewallAttachment:FirewallAttachment") for i in r.inputs["serverIds"]
    ]
    assert sorted(fw_members) == sorted(server_ids), "every server behind exactly one firewall"

    groups = {
        r.name.removeprefix("hetzner-"): _id_of(run, r)
        for r in run.of_type("hcloud:index/placementGroup:PlacementGroup")
    }
    for host in cloud_hosts:
        server = ids[host.name]
        assert server.inputs["labels"] == {
            "project": "selextract",
            "stack": p.stack,
            "phase": str(p.phase),
            "role": host.roles[0].value,
        }
        if host.placement_group:
            assert server.inputs["placementGroupId"] == int(groups[host.placement_group])
        assert server.inputs["image"] == "debian-12"
        assert len(server.inputs["userData"]) < 32 * 1024


@pytest.mark.parametrize("stack_file", HETZNER_STACKS)
def test_firewall_rules(stack_file: str) -> None:
    run = program(stack_file)
    settings = load_stack_file(ROOT / stack_file)
    firewalls = {r.name: r.inputs["rules"] for r in run.of_type("hcloud:index/firewall:Firewall")}
    assert set(firewalls) == {"hetzner-fw-entry", "hetzner-fw-internal"}
    for name, rules in firewalls.items():
        ports = {rule.get("port"): rule["sourceIps"] for rule in rules if rule["protocol"] == "tcp"}
        assert ports.pop(str(settings.ssh.port)) == list(settings.admin_cidrs)
        if name == "hetzner-fw-entry":
            assert ports == {"80": ["0.0.0.0/0", "::/0"], "443": ["0.0.0.0/0", "::/0"]}
        else:
            assert ports == {}, "internal hosts expose nothing publicly"


@pytest.mark.parametrize("stack_file", HETZNER_STACKS)
def test_only_the_entry_publishes_on_a_public_address(stack_file: str) -> None:
    run, p = program(stack_file), expected_plan(stack_file)
    private_ips = {h.private_ip for h in p.hosts}
    for container in run.of_type(CONTAINER):
        for port in container.inputs.get("ports") or []:
            if port["ip"] == "0.0.0.0":
                assert re.search(r"-(entry|lb)-1$", container.inputs["name"]), container.inputs["name"]
                assert port["internal"] in (80, 443)
            else:
                assert port["ip"] in private_ips


@pytest.mark.parametrize("stack_file", [s for s in HETZNER_STACKS if expected_plan(s).phase >= 3])
def test_haproxy_lists_exactly_the_api_hosts(stack_file: str) -> None:
    run, p = program(stack_file), expected_plan(stack_file)
    lb = next(r for r in run.of_type(CONTAINER) if r.inputs["name"].endswith("-lb-1"))
    cfg = next(u["content"] for u in lb.inputs["uploads"] if u["file"].endswith("haproxy.cfg"))
    backend = cfg.split("\nbackend selextract_api_servers\n")[1].split("\nbackend ")[0]
    servers = re.findall(r"^\s+server (\S+) (\S+) check$", backend, re.M)
    assert servers == [(f"{p.stack}-{h.name}-api", f"{h.private_ip}:8000") for h in p.hosts_with(Role.API)]


@pytest.mark.parametrize("stack_file", HETZNER_STACKS)
def test_dns_and_exports(stack_file: str) -> None:
    run, p = program(stack_file), expected_plan(stack_file)
    records = run.of_type("hcloud:index/zoneRrset:ZoneRrset")
    assert sorted(r.inputs["name"] for r in records) == ["api", "app", "monitoring"]
    assert {r.inputs["ttl"] for r in records} == {300}
    entry_ip = run.exports["entryAddress"]
    assert all(r.inputs["records"] == [{"value": entry_ip}] for r in records)
    assert run.exports["apiUrl"] == "https://api.selextract.com"
    assert set(run.exports["hosts"]) == {h.name for h in p.hosts}
    assert run.exports["monthlyCost"] > 0 and run.exports["costCurrency"] == "EUR"


def test_phase4_minio_cluster_spans_four_nodes() -> None:
    run = program("Pulumi.phase4.yaml")
    nodes = [r for r in run.of_type(CONTAINER) if "-objectstore-" in r.inputs["name"]]
    assert len(nodes) == 4
    assert {tuple(n.inputs["command"]) for n in nodes} == {
        # the nodes' own names (hostname + extra_hosts): tests/infra/test_objectstore_specs.py
        ("server", "http://minio-{01...04}.internal:9000/data", "--console-address", ":9001")
    }
    volumes = run.of_type("hcloud:index/volume:Volume")
    assert Counter(v.inputs["labels"]["role"] for v in volumes)["objectstore"] == 4
    env = next(r for r in run.of_type(CONTAINER) if r.name.endswith("api-01-api-1")).inputs["envs"]
    assert "STORAGE_BACKEND=minio" in env


def test_rotation_keeper_changes_only_that_password() -> None:
    base = run_program(ROOT / "Pulumi.local.yaml")
    rotated = run_program(ROOT / "Pulumi.local.yaml", extra_config={"rotation:postgresPassword": 3})
    keepers = {r.name: r.inputs["keepers"] for r in base.of_type("random:index/randomPassword:RandomPassword")}
    rotated_keepers = {
        r.name: r.inputs["keepers"] for r in rotated.of_type("random:index/randomPassword:RandomPassword")
    }
    changed = {n for n in keepers if keepers[n] != rotated_keepers[n]}
    assert changed == {"postgresPassword", "postgresAppPassword0", "postgresAppPassword1"}
    assert rotated_keepers["postgresPassword"] == {"rotation": "3"}
    redis = run_program(ROOT / "Pulumi.local.yaml", extra_config={"rotation:redisPassword": 1})
    redis_keepers = {r.name: r.inputs["keepers"] for r in redis.of_type("random:index/randomPassword:RandomPassword")}
    assert {n for n in keepers if keepers[n] != redis_keepers[n]} == {"redisPassword"}


def _app_login(run: ProgramRun) -> str:
    api = next(r for r in run.of_type(CONTAINER) if r.name == "local-app-01-api-1")
    url = next(e for e in api.inputs["envs"] if e.startswith("DATABASE_URL="))
    return url.split("://", 1)[1].split(":", 1)[0]


@pytest.mark.parametrize("generation", [0, 1, 2])
def test_one_rotation_renews_only_the_login_the_new_version_uses(generation: int) -> None:
    """Step n -> n+1: the owner's password and the app login not in use get new values;
    the login the running version uses keeps its password, so no old container is cut off."""

    def keepers(run: ProgramRun) -> dict[str, dict[str, str]]:
        return {r.name: r.inputs["keepers"] for r in run.of_type("random:index/randomPassword:RandomPassword")}

    before = run_program(ROOT / "Pulumi.local.yaml", extra_config={"rotation:postgresPassword": generation})
    after = run_program(ROOT / "Pulumi.local.yaml", extra_config={"rotation:postgresPassword": generation + 1})
    old_login, new_login = _app_login(before), _app_login(after)
    assert {old_login, new_login} == {"selextract_app_0", "selextract_app_1"}
    new_slot = new_login[-1]
    changed = {n for n in keepers(before) if keepers(before)[n] != keepers(after)[n]}
    assert changed == {"postgresPassword", f"postgresAppPassword{new_slot}"}


def _id_of(run: ProgramRun, resource) -> str:
    return resource.id


def test_release_label_and_pinned_image_tag() -> None:
    released = run_program(ROOT / "Pulumi.local.yaml", extra_config={"selextract:release": "r2"})
    tag = released.exports["version"]["tag"]
    assert tag.endswith("-r2")
    assert {r.inputs["imageName"] for r in released.of_type("docker:index/image:Image")} == {
        f"selextract/app:{tag}",
        f"selextract/worker:{tag}",
    }
    pinned = run_program(ROOT / "Pulumi.local.yaml", extra_config={"selextract:imageTag": "0123abcd"})
    assert pinned.count("docker:index/image:Image") == 0, "a pinned version is reused, not rebuilt"
    api = next(r for r in pinned.of_type(CONTAINER) if r.name == "local-app-01-api-1")
    assert api.inputs["image"] == "selextract/app:0123abcd"
    assert api.inputs["name"].startswith("local-app-01-api-1-0123abcd-g")
    assert pinned.exports["version"] == {"tag": "0123abcd", "commit": "pinned"}


@pytest.mark.parametrize("stack_file", ["Pulumi.local.yaml", "Pulumi.phase2.yaml"])
def test_postgres_password_rotates_in_place(stack_file: str) -> None:
    run = program(stack_file)
    kind = "command:local:Command" if stack_file == "Pulumi.local.yaml" else "command:remote:Command"
    (sync,) = [r for r in run.of_type(kind) if r.name.endswith("-postgres-1-password-sync")]
    assert sync.inputs["create"].startswith("docker exec -i ") and "psql" in sync.inputs["create"]
    assert sync.inputs["stdin"].startswith('ALTER ROLE "selextract" PASSWORD ')
    stdin_leaves = [x for x in run.leaf_inputs if x[1] == sync.name and x[2] in (".stdin", ".triggers[0]")]
    assert stdin_leaves and all(is_secret for _, _, _, is_secret, _ in stdin_leaves)
    logins = {r.name.rsplit("-", 1)[-1]: r for r in run.of_type(kind) if "-password-sync-" in r.name}
    assert sorted(logins) == ["selextract_app_0", "selextract_app_1"]
    for user, login in logins.items():
        assert (
            "SET role = 'selextract'" in login.inputs["stdin"]
            and f'GRANT "selextract" TO "{user}"' in login.inputs["stdin"]
        )
        leaves = [x for x in run.leaf_inputs if x[1] == login.name and x[2] in (".stdin", ".triggers[0]")]
        assert leaves and all(is_secret for _, _, _, is_secret, _ in leaves)
    # only the login in use may log in; the standby keeps whatever `secrets rotate` left
    assert '"selextract_app_0" LOGIN PASSWORD' in logins["selextract_app_0"].inputs["stdin"]
    assert " LOGIN " not in logins["selextract_app_1"].inputs["stdin"]


@pytest.mark.parametrize("stack_file", ["Pulumi.local.yaml", "Pulumi.phase2.yaml"])
def test_redis_password_is_added_in_place_before_the_app_starts(stack_file: str) -> None:
    run = program(stack_file)
    kind = "command:local:Command" if stack_file == "Pulumi.local.yaml" else "command:remote:Command"
    (sync,) = [r for r in run.of_type(kind) if re.search(r"-redis-1-password-sync$", r.name)]
    assert sync.inputs["create"].startswith("docker exec -i ") and "ACL SETUSER default on" in sync.inputs["create"]
    leaves = [x for x in run.leaf_inputs if x[1] == sync.name and x[2] in (".stdin", ".triggers[0]")]
    assert leaves and all(is_secret for _, _, _, is_secret, _ in leaves)
    redis = next(r for r in run.of_type(CONTAINER) if r.name.endswith("-redis-1"))
    assert not [x for x in run.leaf_inputs if x[1] == redis.name and x[2].startswith(".command") and x[3]]
    specs = {s.name: s for s in build_specs(expected_plan(stack_file), load_stack_file(ROOT / stack_file))}
    # a new password must not restart Redis: the env only seeds the ACL file of a new volume
    assert specs[redis.name].ignore_env_changes
    apps = [s for s in specs.values() if s.role in (Role.API, Role.WORKER)]
    assert apps and all(sync.name in s.depends_on for s in apps)


@pytest.mark.parametrize("stack_file", HETZNER_STACKS)
def test_worker_metrics_reach_prometheus_over_the_private_network_only(stack_file: str) -> None:
    """Worker hosts away from Prometheus publish the metrics ports (one per worker
    container) on their private IP only, through their metrics proxy; no firewall rule
    opens them; the worker containers themselves publish nothing."""
    run, p = program(stack_file), expected_plan(stack_file)
    prom_host = p.placements_of(Role.MONITORING)[0].host
    proxies = {r.name: r for r in run.of_type(CONTAINER) if r.name.endswith("-metrics-proxy-1")}
    remote = [pl for pl in p.placements_of(Role.WORKER) if pl.host != prom_host]
    assert sorted(proxies) == sorted(f"{p.stack}-{pl.host}-metrics-proxy-1" for pl in remote)
    for pl in remote:
        ports = proxies[f"{p.stack}-{pl.host}-metrics-proxy-1"].inputs["ports"]
        assert sorted((x["ip"], x["external"]) for x in ports) == [
            (p.host(pl.host).private_ip, 9808 + i) for i in range(pl.containers)
        ]
    for r in run.of_type(CONTAINER):
        if re.search(r"-worker-\d+$", r.name):
            assert not r.inputs.get("ports")
    for fw in run.of_type("hcloud:index/firewall:Firewall"):
        assert not [rule for rule in fw.inputs["rules"] if str(rule.get("port", "")).startswith("98")]


def _with(stack_file: str, **extra: object) -> tuple[ProgramRun, dict]:
    """The program and the specs of `stack_file` with extra config (e.g. a local phase 4)."""
    path = ROOT / stack_file
    run = run_program(path, extra_config=extra) if extra else program(stack_file)
    settings = load_stack_file(path, overrides=extra) if extra else load_stack_file(path)
    return run, {s.name: s for s in build_specs(plan(settings), settings)}


@pytest.mark.parametrize(
    ("stack_file", "phase", "marker"),
    [
        ("Pulumi.local.yaml", 4, "kill -HUP 1"),
        ("Pulumi.phase4.yaml", 4, "mc admin user add"),
        ("Pulumi.phase2.yaml", 2, "mc admin user add"),
    ],
)
def test_object_store_key_is_added_in_place_before_the_app_starts(stack_file: str, phase: int, marker: str) -> None:
    """One sync step on node 1 adds the app's key beside the old ones; the app, workers and
    the bucket step wait for it; the key travels only as a secret on stdin."""
    for generation, access_key in ((0, "selextract"), (2, "selextract-2")):
        run, specs = _with(stack_file, **{"selextract:phase": phase, "rotation:objectStoreSecretKey": generation})
        syncs = [r for r in run.resources if r.name.endswith("-objectstore-1-password-sync") and "Command" in r.type]
        (sync,) = syncs
        node1 = sync.name.removesuffix("-password-sync")
        assert node1 == specs[node1].name and specs[node1].role == Role.OBJECT_STORE
        assert sync.inputs["create"].startswith(f"docker exec -i {node1} sh -c ") and marker in sync.inputs["create"]
        # one line per login, the app's first: "ACCESS SECRET PERMISSIONS"
        first = sync.inputs["stdin"].splitlines()[0]
        assert first.startswith(f"{access_key} ") and len(first.split()) == 3
        leaves = [x for x in run.leaf_inputs if x[1] == sync.name and x[2] in (".stdin", ".triggers[0]")]
        assert leaves and all(is_secret for _, _, _, is_secret, _ in leaves)
        clients = [s for s in specs.values() if "S3_ACCESS_KEY" in s.env and s.password_sync is None]
        assert {s.role for s in clients} == {Role.API, Role.WORKER, Role.OBJECT_STORE}  # the last: bucket step
        assert all(sync.name in s.depends_on for s in clients)
        assert {s.env["S3_ACCESS_KEY"] for s in clients if not s.one_shot} == {access_key}
        assert {s.env["S3_ACCESS_KEY"] for s in clients if s.one_shot} == {"selextract-admin"}  # creates buckets
        # a new app key restarts no object-store node: MinIO's root login is a secret of its
        # own, SeaweedFS's env only seeds the keys file of a new volume
        for spec in specs.values():
            if spec.role == Role.OBJECT_STORE and not spec.one_shot:
                assert "objectStoreSecretKey" not in spec.secrets or spec.ignore_env_changes, spec.name
                assert "objectStoreSecretKey" not in " ".join((*spec.command, *spec.entrypoint))


@pytest.mark.parametrize(
    ("stack_file", "marker"), [("Pulumi.local.yaml", "nginx -s reload"), ("Pulumi.phase4.yaml", "kill -USR2 1")]
)
def test_monitoring_login_is_set_in_the_running_entry(stack_file: str, marker: str) -> None:
    """The monitoring password reaches the entry only through its sync step (secret stdin),
    never an upload: a new one reloads the proxy instead of replacing the public entry."""
    run, specs = _with(stack_file)
    entries = [s for s in specs.values() if s.role in (Role.ENTRY, Role.LB) and s.password_sync is not None]
    assert len(entries) == 1
    (sync,) = [r for r in run.resources if r.name == f"{entries[0].name}-password-sync" and "Command" in r.type]
    assert marker in sync.inputs["create"]
    leaves = [x for x in run.leaf_inputs if x[1] == sync.name and x[2] in (".stdin", ".triggers[0]")]
    assert leaves and all(is_secret for _, _, _, is_secret, _ in leaves)
    assert "monitoringPassword" not in entries[0].secrets
