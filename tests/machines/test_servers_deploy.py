"""The production path for real: `pulumi up` of a `target: servers` stack onto three fresh
machines of the test bed (scripts/machines.sh), through SSH only — each machine
bootstrapped as root, hardened (ufw the only firewall), its Docker engine driven over
SSH, images built once here and pulled from the stack's registry on the app host.

Phase 1: app-01 (nginx, API, workers, monitoring, registry), db-01 (Postgres), redis-01
(Redis). Checked: a scraping task through the public entry; from the public side only
80/443 answer (and SSH only from adminCidrs), tried with connects; the whole app machine
killed mid-task and booted again → the task completes, charged once; a new version and a
Postgres password rotation deployed under steady load through the entry → 0 failed
requests, the new images pulled from the registry; a second `pulumi up` has nothing to
do; `pulumi destroy` leaves the machines' engines empty.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.load import SteadyLoad
from tests.e2e.stack import TESTSITE_IMAGE, LocalStack, docker, require_toolchain
from tests.e2e.test_local_deploy import _get_task, _wait_ready, _wait_task

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
MACHINES = ROOT / "scripts" / "machines.sh"
PREFIX = "sxsrv"
HOSTS = ("app-01", "db-01", "redis-01")
SITE_IP = "198.18.0.6"  # the test website, on the public side (.2-.9 are free for services)
PROBE_IP = "198.18.0.7"  # a client on the public side that is not in adminCidrs
# every port a Selextract host may listen on, tried from the public side
PROBED_PORTS = (22, 80, 443, 3000, 5000, 5432, 6379, 8000, 8080, 8333, 9000, 9090, 9093, 9100, 9121, 9187, 9808)
RULES = {"title": "h1::text", "names": {"selector": "li.product .name::text", "many": True}}


def machines(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([str(MACHINES), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"machines.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def on_machine(machine: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A command on the machine's console (the bed's back door; the deploy uses SSH only)."""
    return subprocess.run(["docker", "exec", machine, *command], capture_output=True, text=True, timeout=timeout)


def _local_images() -> dict[str, object]:
    images = dict(yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]["selextract:images"])
    return images | {"registry": "selextract/registry:2"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    require_toolchain("servers-target")
    name = "srv-p1"
    subprocess.run([str(MACHINES), "down", "--prefix", PREFIX], capture_output=True, timeout=300)
    docker("rm", "-f", f"{PREFIX}-testsite", f"{PREFIX}-probe", check=False)
    machines("up", str(len(HOSTS)), "--prefix", PREFIX)
    bed = json.loads(machines("env"))
    mine = sorted((m for m in bed["machines"] if m["prefix"] == PREFIX), key=lambda m: m["name"])
    assert len(mine) == len(HOSTS), bed
    by_host = dict(zip(HOSTS, mine, strict=True))
    for m in mine:  # fresh machines on recycled addresses: forget the old host keys
        subprocess.run(["ssh-keygen", "-R", m["public"]], capture_output=True)
    docker(
        "run", "-d", "--name", f"{PREFIX}-testsite", "--network", bed["networks"]["public"]["name"],
        "--ip", SITE_IP, TESTSITE_IMAGE,
    )  # fmt: skip
    stack = LocalStack.create(
        name,
        tmp_path_factory.mktemp(name),
        {
            "selextract:domain": "selextract.localhost",
            "selextract:adminCidrs": [f"{bed['networks']['public']['gateway']}/32"],
            "selextract:ssh": {"publicKey": bed["public_key"].strip(), "privateKeyPath": bed["key"]},
            "selextract:tls": {"mode": "selfsigned"},
            "selextract:servers": {
                host: {"publicAddress": m["public"], "privateAddress": m["private"]} for host, m in by_host.items()
            },
            "selextract:images": _local_images(),
            "selextract:api": {"servers": 2, "containersPerServer": 1, "uvicornWorkers": 1},
            "selextract:workers": {"containersPerServer": 1, "concurrency": 2, "cpus": 1, "memoryMb": 768},
            "selextract:scraper": {"allowedNetworks": [f"{SITE_IP}/32"], "domainDelayMs": 0},
        },
        base_file="Pulumi.servers.yaml",
    )
    app = by_host["app-01"]
    client = httpx.Client(base_url=f"https://{app['public']}", verify=False, timeout=30)
    try:
        started = time.monotonic()
        stack.up()
        up_seconds = time.monotonic() - started
        _wait_ready(client, timeout=240)
        yield {
            "stack": stack,
            "client": client,
            "machines": by_host,
            "bed": bed,
            "site": f"http://{SITE_IP}:8080",
            "up_seconds": up_seconds,
        }
    finally:
        client.close()
        try:
            stack.destroy()
            left = {
                m["name"]: on_machine(m["name"], "docker", "ps", "-aq").stdout.split()
                for m in mine
                if on_machine(m["name"], "true").returncode == 0
            }
            assert all(not ids for ids in left.values()), f"destroy left containers: {left}"
        finally:
            docker("rm", "-f", f"{PREFIX}-testsite", f"{PREFIX}-probe", check=False)
            subprocess.run([str(MACHINES), "down", "--prefix", PREFIX], capture_output=True, timeout=300)


def _api_key(deployed: dict, email: str) -> str:
    app = deployed["machines"]["app-01"]["name"]
    ids = on_machine(app, "docker", "ps", "-q", "--filter", "label=selextract.role=api", "--filter", "status=running")
    api = ids.stdout.split()[0]
    out = on_machine(app, "docker", "exec", api, "python", "-m", "app.admin", "create-key", "--email", email)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_every_machine_was_prepared_over_ssh(deployed: dict) -> None:
    """Hardening ran to its end on each machine: deploy user in the docker group, root
    login off, ufw active with the stack's rules, the registry trusted."""
    for host, machine in deployed["machines"].items():
        name = machine["name"]
        assert "docker" in on_machine(name, "id", "-nG", "deploy").stdout.split(), host
        sshd = on_machine(name, "sshd", "-T").stdout
        assert "permitrootlogin no" in sshd and "passwordauthentication no" in sshd, host
        ufw = on_machine(name, "ufw", "status").stdout
        assert "Status: active" in ufw, (host, ufw)
        daemon = json.loads(on_machine(name, "cat", "/etc/docker/daemon.json").stdout)
        assert daemon["insecure-registries"] == ["10.0.0.0/16"], (host, daemon)


def test_scraping_task_through_the_public_entry(deployed: dict) -> None:
    client, site = deployed["client"], deployed["site"]
    headers = {"Authorization": f"Bearer {_api_key(deployed, 'srv@example.com')}"}
    urls = [f"{site}/products.html", f"{site}/status/500"]
    created = client.post(
        "/api/v1/tasks", headers=headers, json={"urls": urls, "extract": RULES, "options": {"retries": 1}}
    )
    assert created.status_code == 201, created.text
    task = _wait_task(client, headers, created.json()["id"])
    assert (task["state"], task["succeeded_count"], task["failed_count"]) == ("completed", 1, 1), task
    results = client.get(f"/api/v1/tasks/{task['id']}/results?format=json", headers=headers)
    assert results.status_code == 200, results.text
    page = {r["url"]: r for r in results.json()["results"]}[urls[0]]["data"]
    assert page["title"] == "Products" and page["names"][0] == "Product 01"


def _probe(targets: list[tuple[str, int]]) -> dict[str, bool]:
    """Connect attempts from a client on the public side outside adminCidrs."""
    script = (
        "import json, socket, sys\n"
        "out = {}\n"
        "for host, port in json.loads(sys.argv[1]):\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    out[f'{host}:{port}'] = s.connect_ex((host, port)) == 0\n"
        "    s.close()\n"
        "print(json.dumps(out))\n"
    )
    net = "selextract-machines-public"
    proc = docker(
        "run", "--rm", "--name", f"{PREFIX}-probe", "--network", net, "--ip", PROBE_IP,
        "selextract/python:3.11", "python", "-c", script, json.dumps(targets), timeout=300,
    )  # fmt: skip
    return json.loads(proc.stdout)


def test_only_the_entry_answers_from_the_public_side(deployed: dict) -> None:
    """Tried with connects, not read from config: on every machine's public address only
    80/443 of the entry answer a stranger; SSH answers only this machine (adminCidrs)."""
    targets = [(m["public"], port) for m in deployed["machines"].values() for port in PROBED_PORTS]
    opened = {target for target, ok in _probe(targets).items() if ok}
    app = deployed["machines"]["app-01"]["public"]
    assert opened == {f"{app}:80", f"{app}:443"}
    for machine in deployed["machines"].values():  # from an admin address SSH answers
        with socket.create_connection((machine["public"], 22), timeout=5) as sock:
            assert sock.recv(4) == b"SSH-"


def test_task_survives_its_machine_being_killed(deployed: dict) -> None:
    """The app machine (entry, API, workers) loses power mid-task and boots again: the
    queued message on redis-01 brings the task back; it completes and is charged once."""
    client, site = deployed["client"], deployed["site"]
    app = deployed["machines"]["app-01"]["name"]
    headers = {"Authorization": f"Bearer {_api_key(deployed, 'power@example.com')}"}
    created = client.post(
        "/api/v1/tasks",
        headers=headers,
        json={"urls": [f"{site}/slow?ms=8000"], "extract": {"title": "title::text"}, "options": {"timeout": 30}},
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + 90
    while _get_task(client, headers, task_id)["state"] != "running":
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.5)
    machines("kill", app)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{deployed['machines']['app-01']['public']}/health", verify=False, timeout=3)
    machines("start", app)
    _wait_ready(client, timeout=240)
    task = _wait_task(client, headers, task_id, timeout=600)
    assert task["state"] == "completed", task
    assert task["succeeded_count"] == 1 and task["credits_charged"] == 1, task


def _up_under_load(deployed: dict, key: str, value: str, label: str) -> SteadyLoad:
    """A config change and `pulumi up` while /health and /health/ready are read through the
    public entry (~20 req/s); the up's duration goes into the deploy cost table."""
    stack: LocalStack = deployed["stack"]
    _wait_ready(deployed["client"], timeout=240)
    stack.pulumi("config", "set", "--stack", stack.name, key, value)
    entry = f"https://{deployed['machines']['app-01']['public']}"
    since = str(int(time.time()))
    with SteadyLoad(entry, {}, ("/health", "/health/ready"), max_seconds=420) as load:
        time.sleep(2)
        started = time.monotonic()
        up = stack.pulumi("up", "--yes", "--stack", stack.name, "--suppress-progress", timeout=360)
        deployed.setdefault("redeploys", {})[label] = time.monotonic() - started
        time.sleep(3)
    print(f"\nfirst up {deployed['up_seconds']:.0f} s; redeploys: {deployed['redeploys']}")
    assert sum(load.results.values()) > 100, load.results
    failed = f"{len(load.failures)} failed of {sum(load.results.values())}: {load.failures[:5]}"
    assert load.failures == [], f"{failed}\n{_what_the_entry_saw(deployed, since)}\n{up.stdout[-3000:]}"
    return load


def _what_the_entry_saw(deployed: dict, since: str) -> str:
    """For a failure report: app-01's container events and the entry's failed requests and
    errors since `since` (the machine shares this host's clock)."""
    app = deployed["machines"]["app-01"]["name"]
    events = on_machine(
        app, "docker", "events", "--since", since, "--until", str(int(time.time())), "--filter", "type=container",
        "--filter", "event=start", "--filter", "event=health_status", "--filter", "event=kill", "--filter",
        "event=die", "--filter", "event=destroy", "--format", "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}",
    )  # fmt: skip
    entry = on_machine(app, "docker", "logs", "--since", since, f"{deployed['stack'].name}-app-01-entry-1")
    lines = (entry.stdout + entry.stderr).splitlines()
    errors = [line for line in lines if " 502 " in line or "[error]" in line or "[warn]" in line]
    return "events:\n" + events.stdout + "\nentry:\n" + "\n".join(errors[:40])


def _running(machine: str, role: str) -> dict[str, str]:
    """Running containers of one role on a machine: name -> image ID (proxies left out)."""
    out = on_machine(
        machine, "docker", "ps", "--filter", f"label=selextract.role={role}", "--format", "{{.Names}} {{.ID}}"
    ).stdout
    names = [line.split()[0] for line in out.splitlines() if not line.split()[0].endswith("-proxy-1")]
    return {
        name: on_machine(machine, "docker", "inspect", "--format", "{{.Image}}", name).stdout.strip() for name in names
    }


def _env(machine: str, container: str, key: str) -> str:
    env = on_machine(machine, "docker", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", container)
    return next(line.split("=", 1)[1] for line in env.stdout.splitlines() if line.startswith(f"{key}="))


def test_new_version_under_load_comes_through_the_registry(deployed: dict) -> None:
    """`selextract:release r2` and `pulumi up` under steady load: no request fails, app-01
    runs the new version's API and workers, from images pulled from the stack's registry
    (the registry's digest on them; nothing was ever built on the machine)."""
    stack: LocalStack = deployed["stack"]
    app = deployed["machines"]["app-01"]
    before = stack.outputs()["version"]["tag"]
    _up_under_load(deployed, "selextract:release", "r2", "release r2")
    tag = stack.outputs()["version"]["tag"]
    assert tag == f"{before}-r2"
    registry = f"{app['private']}:5000"
    for role, kind in (("api", "app"), ("worker", "worker")):
        running = _running(app["name"], role)
        assert running and all(f"-{tag}-g" in name for name in running), (role, sorted(running))
        for image in set(running.values()):
            (pulled,) = json.loads(on_machine(app["name"], "docker", "image", "inspect", image).stdout)
            assert f"{registry}/selextract/{kind}:{tag}" in pulled["RepoTags"], pulled["RepoTags"]
            assert any(d.startswith(f"{registry}/selextract/{kind}@sha256:") for d in pulled["RepoDigests"]), pulled
    built = ("--filter", "reference=selextract/app", "--filter", "reference=selextract/worker")
    assert on_machine(app["name"], "docker", "images", "-q", *built).stdout.split() == []
    cache = on_machine(app["name"], "docker", "system", "df", "--format", "{{.Type}}={{.TotalCount}}").stdout
    assert "Build Cache=0" in cache.splitlines(), cache


def _psql(db: str, container: str, url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """`sql` run on db-01's Postgres with the login in a database URL (password by env)."""
    credentials, database = url.split("://", 1)[1].split("@", 1)
    user, password = credentials.split(":", 1)
    return on_machine(
        db, "docker", "exec", "-e", f"PGPASSWORD={password}", container,
        "psql", "-h", "127.0.0.1", "-U", user, "-d", database.rsplit("/", 1)[-1].split("?")[0], "-tAc", sql,
    )  # fmt: skip


def test_postgres_password_rotation_under_load(deployed: dict) -> None:
    """`rotation:postgresPassword` bumped and `pulumi up` under steady load: no request
    fails; API and workers log in as the other app role with a fresh password, and no
    session of the old login is left on db-01 (its containers are gone)."""
    stack: LocalStack = deployed["stack"]
    app, db = deployed["machines"]["app-01"]["name"], deployed["machines"]["db-01"]["name"]
    postgres = f"{stack.name}-db-01-postgres-1"

    def logins() -> set[str]:
        return {_env(app, name, "DATABASE_URL") for role in ("api", "worker") for name in _running(app, role)}

    (old,) = logins()
    old_user = old.split("://", 1)[1].split(":", 1)[0]
    _up_under_load(deployed, "rotation:postgresPassword", "1", "rotation:postgresPassword")
    current = logins()
    assert len(current) == 1, "API and workers share one login"
    (new,) = current
    new_user = new.split("://", 1)[1].split(":", 1)[0]
    assert {old_user, new_user} == {"selextract_app_0", "selextract_app_1"}

    def password(url: str) -> bytes:  # hashed: no password in a failure report
        return hashlib.sha256(url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1].encode()).digest()

    assert password(new) != password(old), "a fresh password"
    probe = _psql(db, postgres, new, "select 1")
    assert probe.stdout.strip() == "1", probe.stderr
    deadline = time.monotonic() + 60
    while True:  # the old containers' sessions end as they are removed
        left = _psql(db, postgres, new, f"select count(*) from pg_stat_activity where usename = '{old_user}'")
        if left.stdout.strip() == "0" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert left.stdout.strip() == "0", f"sessions of {old_user} left: {left.stdout} {left.stderr}"


def test_second_up_has_nothing_to_do(deployed: dict) -> None:
    preview = deployed["stack"].preview_no_changes()
    assert preview.returncode == 0, preview.stdout[-4000:]
