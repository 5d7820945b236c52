"""Every policy rule (policies/rules.py) on passing and failing inputs, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from policies import rules
from policies.rules import (
    CONTAINER,
    FIREWALL,
    FIREWALL_ATTACHMENT,
    PLACEMENT_GROUP,
    PRIMARY_IP,
    RANDOM_PASSWORD,
    SERVER,
    SERVER_NETWORK,
    UNKNOWN,
    VOLUME,
    Context,
    Resource,
    SecretText,
)

LABELS = {"project": "selextract", "stack": "phase3", "phase": "3", "role": "api"}
ADMIN = ["203.0.113.0/24"]
WORLD = ["0.0.0.0/0", "::/0"]


def rule(port: str, sources: list[str], protocol: str = "tcp", direction: str = "in", description: str = "") -> dict:
    return {
        "direction": direction,
        "protocol": protocol,
        "port": port,
        "sourceIps": sources,
        "description": description,
    }


ENTRY_RULES = [
    rule("22", ADMIN),
    {"direction": "in", "protocol": "icmp", "sourceIps": WORLD},
    *(rule(p, WORLD) for p in ("80", "443")),
]
INTERNAL_RULES = [rule("22", ADMIN), {"direction": "in", "protocol": "icmp", "sourceIps": WORLD}]


def res(
    type_: str, rname: str, rid: str | None = None, deps: dict[str, list[str]] | None = None, /, **props: Any
) -> Resource:
    return Resource(
        type=type_,
        name=rname,
        props=props,
        urn=f"urn:pulumi:test::selextract::{type_}::{rname}",
        id=rid,
        deps={k: frozenset(v) for k, v in (deps or {}).items()},
    )


def server(name: str, rid: str, role: str, *, group: Any = None, labels: dict | None = None, **props: Any) -> Resource:
    return res(
        SERVER,
        name,
        rid,
        name=f"phase3-{name}",
        serverType=props.pop("serverType", "cx22"),
        labels={**LABELS, "role": role} if labels is None else labels,
        placementGroupId=group,
        **props,
    )


def fleet(
    *servers: Resource, entry: tuple[str, ...] = (), firewall: bool = True, network: bool = True
) -> list[Resource]:
    """Servers plus the firewalls/attachments/private-network joins the program declares."""
    out = list(servers)
    fw_entry = res(FIREWALL, "fw-entry", "900", rules=ENTRY_RULES)
    fw_internal = res(FIREWALL, "fw-internal", "901", rules=INTERNAL_RULES)
    out += [fw_entry, fw_internal]
    ids = {s.name: int(s.id) for s in servers if s.id}
    if firewall:
        out.append(res(FIREWALL_ATTACHMENT, "att-entry", "902", firewallId=900, serverIds=[ids[n] for n in entry]))
        out.append(
            res(
                FIREWALL_ATTACHMENT,
                "att-internal",
                "903",
                firewallId=901.0,  # IDs arrive as JSON numbers
                serverIds=[float(i) for n, i in ids.items() if n not in entry],
            )
        )
    if network:
        out += [res(SERVER_NETWORK, f"{s.name}-private", None, serverId=int(s.id), ip="10.0.1.10") for s in servers]
    return out


def names(violations: list[rules.Violation]) -> list[str]:
    return [v.message for v in violations]


# ------------------------------------------------------------------ server labels


def test_server_with_all_labels_passes() -> None:
    assert rules.server_labels(SERVER, {"labels": LABELS}) == []


@pytest.mark.parametrize(
    ("labels", "missing"),
    [
        ({}, "project/phase/role labels"),
        ({"project": "selextract", "phase": "3"}, "role label"),
        ({"project": "selextract", "phase": "", "role": "api"}, "phase label"),
        (None, "project/phase/role labels"),
    ],
)
def test_server_without_labels_fails(labels: dict | None, missing: str) -> None:
    props = {} if labels is None else {"labels": labels}
    [message] = rules.server_labels(SERVER, props)
    assert f"server has no {missing}" in message


def test_server_label_project_must_be_selextract() -> None:
    [message] = rules.server_labels(SERVER, {"labels": {**LABELS, "project": "other"}})
    assert "project=other should be project=selextract" in message


def test_label_rule_ignores_other_types_and_unknown_labels() -> None:
    assert rules.server_labels(FIREWALL, {}) == []
    assert rules.server_labels(SERVER, {"labels": UNKNOWN}) == []


def test_required_labels_are_configurable() -> None:
    ctx = Context(policy={"requiredLabels": ["project", "owner"]})
    [message] = rules.server_labels(SERVER, {"labels": LABELS}, ctx)
    assert "no owner label" in message


# -------------------------------------------------------------- firewall ports


def test_entry_and_internal_firewalls_pass() -> None:
    assert rules.firewall_public_ports(FIREWALL, {"rules": ENTRY_RULES}) == []
    assert rules.firewall_public_ports(FIREWALL, {"rules": INTERNAL_RULES}) == []


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        (rule("5432", ["0.0.0.0/0"]), "tcp 5432 (postgres) to 0.0.0.0/0"),
        (rule("22", ["::/0"], description="ssh"), "rule 2 (ssh) opens tcp 22 (ssh) to ::/0"),
        (rule("6379", WORLD, protocol="udp"), "udp 6379 (redis) to 0.0.0.0/0 and ::/0"),
        (rule("9000", ["0.0.0.0/0"]), "9000 (object store (S3 API))"),
        (rule("5000-7000", ["0.0.0.0/0"]), "5432 (postgres), 6379 (redis)"),
        (rule("any", ["0.0.0.0/0"]), "22 (ssh), 5432 (postgres), 6379 (redis), 9000"),
        (rule("5432", ["0.0.0.0/0"], direction=""), "5432"),  # direction defaults to in
    ],
)
def test_firewall_opening_ssh_or_database_to_world_fails(bad: dict, expect: str) -> None:
    [message] = rules.firewall_public_ports(FIREWALL, {"rules": [*INTERNAL_RULES, bad]})
    assert expect in message
    assert "adminCidrs" in message


@pytest.mark.parametrize(
    "ok",
    [
        rule("5432", ["10.0.0.0/16"]),
        rule("22", ["203.0.113.7/32"]),
        rule("22", WORLD, direction="out"),
        rule("8080", WORLD),
        {"direction": "in", "protocol": "icmp", "sourceIps": WORLD},
        rule("5432", []),
    ],
)
def test_firewall_rules_that_are_fine(ok: dict) -> None:
    assert rules.firewall_public_ports(FIREWALL, {"rules": [ok]}) == []


def test_firewall_configured_ssh_port_and_extra_ports() -> None:
    ctx = Context(stack={"selextract:ssh": '{"port": 2222}'}, policy={"forbiddenPorts": [8404]})
    [ssh] = rules.firewall_public_ports(FIREWALL, {"rules": [rule("2222", WORLD)]}, ctx)
    assert "2222 (ssh (selextract:ssh.port))" in ssh
    [stats] = rules.firewall_public_ports(FIREWALL, {"rules": [rule("8404", WORLD)]}, ctx)
    assert "8404" in stats
    assert rules.firewall_public_ports(FIREWALL, {"rules": [rule("2222", WORLD)]}) == []


def test_firewall_rule_with_unknown_port_is_skipped() -> None:
    assert rules.firewall_public_ports(FIREWALL, {"rules": [rule(UNKNOWN, WORLD)]}) == []  # type: ignore[arg-type]


# ------------------------------------------------------------- container ports


def container(name: str, role: str, *ports: tuple[int, int, Any], **props: Any) -> dict:
    return {
        "name": name,
        "labels": [
            {"label": "selextract.stack", "value": "phase3"},
            {"label": "selextract.role", "value": role},
            {"label": "selextract.host", "value": name.split("-", 1)[1].rsplit("-", 2)[0]},
        ],
        "ports": [{"internal": i, "external": e, **({} if ip is None else {"ip": ip})} for i, e, ip in ports],
        **props,
    }


@pytest.mark.parametrize(
    "props",
    [
        container("phase3-lb-01-lb-1", "lb", (80, 80, "0.0.0.0"), (443, 443, "0.0.0.0")),
        container("phase1-app-01-entry-1", "entry", (80, 80, "0.0.0.0"), (443, 443, "::")),
        container("phase3-db-01-postgres-1", "postgres", (5432, 5432, "10.0.1.11")),
        container("local-app-01-monitoring-1", "monitoring", (9090, 9090, "127.0.0.1")),
        container("local-app-01-entry-1", "entry", (443, 8443, "127.0.0.1")),
        container("phase3-api-01-api-1", "api", (8000, 8000, "fd00::5")),
        container("phase3-api-01-api-1", "api"),
    ],
)
def test_containers_that_publish_correctly_pass(props: dict) -> None:
    assert rules.container_public_ports(CONTAINER, props) == []


@pytest.mark.parametrize(
    ("props", "expect"),
    [
        (container("phase3-db-01-postgres-1", "postgres", (5432, 5432, "0.0.0.0")), "publishes port 5432"),
        (container("phase3-redis-01-redis-1", "redis", (6379, 6379, None)), "every address (no ip given)"),
        (container("phase3-api-01-api-1", "api", (8000, 8000, "198.51.100.7")), "on 198.51.100.7"),
        (container("phase3-api-01-api-1", "api", (8000, 8000, "::")), "on ::"),
        (container("phase3-lb-01-lb-1", "lb", (8404, 8404, "0.0.0.0")), "entry may only publish 80/443"),
        (
            container("phase3-lb-01-monitoring-1", "monitoring", network_mode=None, networkMode="host"),
            "network_mode=host",
        ),
    ],
)
def test_containers_publishing_publicly_fail(props: dict, expect: str) -> None:
    [message] = rules.container_public_ports(CONTAINER, props)
    assert expect in message


def test_entry_is_recognised_by_name_without_labels() -> None:
    props = {"name": "phase3-lb-01-lb-1", "ports": [{"internal": 443, "external": 443, "ip": "0.0.0.0"}]}
    assert rules.container_public_ports(CONTAINER, props) == []


def test_container_port_with_unknown_ip_is_skipped() -> None:
    props = container("phase3-api-01-api-1", "api", (8000, 8000, UNKNOWN))
    assert rules.container_public_ports(CONTAINER, props) == []


# ----------------------------------------------------------------------- secrets

PW = "s3cr3t-Value-123"


@pytest.mark.parametrize(
    ("type_", "props"),
    [
        (CONTAINER, {"envs": [SecretText(f"POSTGRES_PASSWORD={PW}"), "POSTGRES_USER=selextract"]}),
        (CONTAINER, {"envs": [SecretText(f"DATABASE_URL=postgresql://selextract:{PW}@10.0.1.11:5432/db")]}),
        (CONTAINER, {"command": ["redis-server", "--requirepass", SecretText(PW)]}),
        (CONTAINER, {"envs": ["POSTGRES_PASSWORD_FILE=/run/secrets/pg", "S3_ACCESS_KEY=selextract"]}),
        (CONTAINER, {"envs": ["REDIS_PASSWORD=", "TOKEN_TTL=3600"]}),
        (CONTAINER, {"healthcheck": {"tests": ["CMD-SHELL", 'redis-cli -a "$REDIS_PASSWORD" ping']}}),
        (CONTAINER, {"uploads": [{"file": "/etc/nginx/monitoring.htpasswd", "content": SecretText(f"admin:{PW}")}]}),
        (CONTAINER, {"uploads": [{"file": "/etc/alertmanager.yml", "content": "smtp_auth_password: ''\n"}]}),
        (CONTAINER, {"uploads": [{"file": "/etc/prometheus.yml", "content": "password_file: /run/secrets/p\n"}]}),
        ("pulumi:providers:hcloud", {"token": SecretText("x" * 64)}),
        ("command:remote:Command", {"connection": {"host": "198.51.100.7", "privateKey": SecretText(PW)}}),
        ("hcloud:index/sshKey:SshKey", {"publicKey": "ssh-ed25519 AAAA deploy", "name": "deploy"}),
        (SERVER, {"sshKeys": ["1015"], "userData": "#cloud-config\nssh_pwauth: false\n"}),
    ],
)
def test_credentials_passed_as_secrets_pass(type_: str, props: dict) -> None:
    assert rules.secrets_as_pulumi_secrets(type_, props) == []


@pytest.mark.parametrize(
    ("type_", "props", "expect"),
    [
        (
            CONTAINER,
            {"envs": [f"POSTGRES_PASSWORD={PW}"]},
            "envs[0] is plain text but environment variable POSTGRES_PASSWORD",
        ),
        (CONTAINER, {"envs": [f"S3_SECRET_KEY={PW}"]}, "S3_SECRET_KEY"),
        (CONTAINER, {"envs": [f"REDIS_URL=redis://:{PW}@10.0.1.12:6379/0"]}, "a URL carries a password"),
        (CONTAINER, {"command": ["redis-server", "--requirepass", PW]}, "follows the argument --requirepass"),
        (CONTAINER, {"command": ["minio", f"--password={PW}"]}, "argument --password carries a credential"),
        (
            CONTAINER,
            {"uploads": [{"file": "/etc/nginx/monitoring.htpasswd", "content": f"admin:{{PLAIN}}{PW}\n"}]},
            "uploaded file /etc/nginx/monitoring.htpasswd holds credentials",
        ),
        (
            CONTAINER,
            {
                "uploads": [
                    {
                        "file": "/usr/local/etc/haproxy/haproxy.cfg",
                        "content": f"userlist u\n  user a insecure-password {PW}\n",
                    }
                ]
            },
            "uploaded file /usr/local/etc/haproxy/haproxy.cfg sets a password",
        ),
        ("pulumi:providers:hcloud", {"token": "x" * 64}, "token is plain text but property 'token' holds a credential"),
        ("command:local:Command", {"environment": {"DB_PASSWORD": PW}}, "environment.DB_PASSWORD is plain text"),
        (CONTAINER, {"envs": [f"SLACK_WEBHOOK_URL=https://hooks.slack.com/services/{PW}"]}, "SLACK_WEBHOOK_URL"),
        ("command:remote:Command", {"connection": {"password": PW}}, "connection.password"),
    ],
)
def test_credentials_in_plain_text_fail(type_: str, props: dict, expect: str) -> None:
    [message] = rules.secrets_as_pulumi_secrets(type_, props)
    assert expect in message
    assert PW not in message, "a violation message must never show the secret"


def test_no_secret_value_in_plain_text_passes_when_secrets_stay_secret() -> None:
    resources = [
        res(RANDOM_PASSWORD, "postgresPassword", "1", result=SecretText(PW), length=32),
        res(CONTAINER, "pg", "2", envs=[SecretText(f"POSTGRES_PASSWORD={PW}"), "POSTGRES_USER=selextract"]),
        res(CONTAINER, "api", "3", labels=[{"label": "selextract.stack", "value": "selextract"}]),
    ]
    assert rules.no_secret_in_plain_text(resources) == []


@pytest.mark.parametrize(
    ("resources", "ctx", "expect"),
    [
        (
            [
                res(RANDOM_PASSWORD, "postgresPassword", "1", result=SecretText(PW)),
                res(CONTAINER, "debug", "2", labels=[{"label": "pw", "value": f"copy-{PW}"}]),
            ],
            Context(),
            "Container debug: labels[0].value contains the value of a Pulumi secret",
        ),
        (
            [
                res(CONTAINER, "pg", "2", envs=[SecretText(f"POSTGRES_PASSWORD={PW}")]),
                res(CONTAINER, "exporter", "3", command=["exporter", f"--dsn=postgres://u@h/{PW}"]),
            ],
            Context(),
            "Container exporter: command[1]",
        ),
        (
            [res("hcloud:index/server:Server", "app", "4", userData=f"#cloud-config\nwrite: {PW}\n")],
            Context(secret_values=frozenset({PW})),
            "Server app: userData",
        ),
    ],
)
def test_secret_value_reused_in_plain_text_fails(resources: list[Resource], ctx: Context, expect: str) -> None:
    [violation] = rules.no_secret_in_plain_text(resources, ctx)
    assert expect in violation.message
    assert PW not in violation.message
    assert violation.urn


def test_short_secret_values_are_not_searched() -> None:
    resources = [
        res(RANDOM_PASSWORD, "p", "1", result=SecretText("abc")),
        res(CONTAINER, "c", "2", command=["abc-container"]),
    ]
    assert rules.no_secret_in_plain_text(resources) == []


# --------------------------------------------- servers: firewall, private network


def test_servers_behind_firewall_and_in_network_pass() -> None:
    stack = fleet(server("lb-01", "10", "lb"), server("db-01", "11", "postgres"), entry=("lb-01",))
    assert rules.servers_firewalled_and_private(stack) == []


def test_references_resolve_through_property_dependencies() -> None:
    """During `pulumi preview` IDs are unknown; the engine's property dependencies name the URNs."""
    db = server("db-01", None, "postgres")  # type: ignore[arg-type]
    fw = res(FIREWALL, "fw-internal", None, rules=INTERNAL_RULES)
    stack = [
        db,
        fw,
        res(
            FIREWALL_ATTACHMENT,
            "att",
            None,
            {"serverIds": [db.urn], "firewallId": [fw.urn]},
            serverIds=UNKNOWN,
            firewallId=UNKNOWN,
        ),
        res(SERVER_NETWORK, "db-01-private", None, {"serverId": [db.urn]}, serverId=UNKNOWN),
    ]
    assert rules.servers_firewalled_and_private(stack) == []


def test_inline_firewall_ids_networks_and_label_selectors_count() -> None:
    inline = server("db-01", "11", "postgres", firewallIds=[901], networks=[{"networkId": 5, "ip": "10.0.1.11"}])
    selected = server("api-01", "12", "api")
    by_label = res(
        FIREWALL, "fw-api", "905", rules=INTERNAL_RULES, applyTos=[{"labelSelector": "project=selextract,role=api"}]
    )
    stack = [
        inline,
        selected,
        by_label,
        res(FIREWALL, "fw-internal", "901", rules=INTERNAL_RULES),
        res(SERVER_NETWORK, "api-01-private", None, serverId=12),
    ]
    assert rules.servers_firewalled_and_private(stack) == []


def test_server_without_firewall_fails() -> None:
    stack = fleet(server("db-01", "11", "postgres"), server("redis-01", "12", "redis"))
    stack = [r for r in stack if r.type != FIREWALL_ATTACHMENT] + [
        res(FIREWALL_ATTACHMENT, "att", "950", firewallId=901, serverIds=[11])
    ]
    [violation] = rules.servers_firewalled_and_private(stack)
    assert "server redis-01 (role redis) is behind no firewall" in violation.message
    assert violation.urn.endswith("::redis-01")


def test_label_selector_that_does_not_match_leaves_server_unprotected() -> None:
    stack = [
        server("api-01", "12", "api"),
        res(FIREWALL, "fw-db", "905", rules=INTERNAL_RULES, applyTos=[{"labelSelector": "role=postgres"}]),
        res(SERVER_NETWORK, "api-01-private", None, serverId=12),
    ]
    [violation] = rules.servers_firewalled_and_private(stack)
    assert "behind no firewall" in violation.message


def test_server_outside_private_network_fails() -> None:
    stack = fleet(server("db-01", "11", "postgres"), server("redis-01", "12", "redis"), network=False)
    found = names(rules.servers_firewalled_and_private(stack))
    assert len(found) == 2 and all("is not in the private network" in m for m in found)


# ------------------------------------------------------------- data hosts no web


def test_data_hosts_behind_internal_firewall_pass() -> None:
    stack = fleet(
        server("lb-01", "10", "lb"),
        server("db-01", "11", "postgres"),
        server("minio-01", "12", "objectstore"),
        entry=("lb-01",),
    )
    stack.append(
        res(CONTAINER, "pg", None, **container("phase3-db-01-postgres-1", "postgres", (5432, 5432, "10.0.1.11")))
    )
    assert rules.data_hosts_no_public_web(stack) == []


def test_database_behind_the_entry_firewall_fails() -> None:
    stack = fleet(server("lb-01", "10", "lb"), server("db-01", "11", "postgres"), entry=("lb-01", "db-01"))
    [violation] = rules.data_hosts_no_public_web(stack)
    assert "server db-01 (role postgres) is behind firewall fw-entry" in violation.message
    assert "which opens 80/443 to 0.0.0.0/0 and ::/0" in violation.message


def test_object_store_container_publishing_443_publicly_fails() -> None:
    stack = fleet(server("minio-01", "12", "objectstore"))
    stack.append(
        res(
            CONTAINER,
            "console",
            None,
            **container("phase3-minio-01-objectstore-1", "objectstore", (9001, 443, "0.0.0.0")),
        )
    )
    [violation] = rules.data_hosts_no_public_web(stack)
    assert "on objectstore host minio-01 publishes 443 on a public address" in violation.message


# -------------------------------------------------------------- placement groups


def spread(name: str, rid: str, type_: str = "spread") -> Resource:
    return res(PLACEMENT_GROUP, name, rid, type=type_, labels={**LABELS, "role": name})


def test_replicated_roles_in_spread_groups_pass() -> None:
    stack = [
        spread("api", "50"),
        server("api-01", "11", "api", group=50),
        server("api-02", "12", "api", group=50.0),
        server("db-01", "13", "postgres"),  # one of a kind: no group needed
        server("worker-01", "14", "worker"),  # a single worker needs none either
    ]
    assert rules.replicated_roles_spread(stack) == []


def test_replicated_server_without_group_fails() -> None:
    stack = [spread("api", "50"), server("api-01", "11", "api", group=50), server("api-02", "12", "api")]
    [violation] = rules.replicated_roles_spread(stack)
    assert "server api-02 is one of 2 api servers but in no placement group" in violation.message


def test_placement_group_must_be_spread() -> None:
    stack = [
        spread("w", "50", type_="other"),
        server("worker-01", "11", "worker", group=50),
        server("worker-02", "12", "worker", group=50),
    ]
    found = names(rules.replicated_roles_spread(stack))
    assert len(found) == 2 and "of type other; replicated roles need type=spread" in found[0]


def test_placement_group_resolved_by_dependency_or_unknown_passes() -> None:
    group = spread("api", None)  # type: ignore[arg-type]
    stack = [
        group,
        res(SERVER, "api-01", None, {"placementGroupId": [group.urn]}, labels=LABELS, placementGroupId=UNKNOWN),
        res(SERVER, "api-02", None, labels=LABELS, placementGroupId=UNKNOWN),
    ]
    assert rules.replicated_roles_spread(stack) == []


def test_replicated_roles_are_configurable() -> None:
    stack = [server("redis-01", "11", "redis"), server("redis-02", "12", "redis")]
    assert rules.replicated_roles_spread(stack) == []
    assert len(rules.replicated_roles_spread(stack, Context(policy={"replicatedRoles": ["redis"]}))) == 2


# -------------------------------------------------------- object-store quorum


def minio_fleet(n: int, phase: str = "4") -> list[Resource]:
    labels = {**LABELS, "phase": phase}
    return [server("lb-01", "10", "lb", labels={**labels, "role": "lb"})] + [
        server(f"minio-{i:02d}", str(20 + i), "objectstore", labels={**labels, "role": "objectstore"})
        for i in range(1, n + 1)
    ]


def test_phase4_with_four_object_store_nodes_passes() -> None:
    assert rules.object_store_quorum(minio_fleet(4)) == []
    assert rules.object_store_quorum(minio_fleet(6)) == []


def test_phase4_with_three_object_store_nodes_fails() -> None:
    [violation] = rules.object_store_quorum(minio_fleet(3))
    assert "phase 4 runs 3 object-store servers; the object-store cluster needs at least 4" in violation.message


def test_earlier_phases_need_no_quorum() -> None:
    assert rules.object_store_quorum(minio_fleet(1, phase="3")) == []
    assert rules.object_store_quorum([]) == []


def test_phase_comes_from_stack_config_when_given() -> None:
    [violation] = rules.object_store_quorum(minio_fleet(2, phase="3"), Context(stack={"selextract:phase": "4"}))
    assert "runs 2" in violation.message


def test_local_simulation_counts_object_store_hosts() -> None:
    def node(host: str) -> Resource:
        return res(
            CONTAINER,
            f"local-{host}-objectstore-1",
            None,
            labels=[{"label": "selextract.role", "value": "objectstore"}, {"label": "selextract.host", "value": host}],
        )

    ctx = Context(stack={"selextract:phase": 4})
    assert rules.object_store_quorum([node(f"minio-0{i}") for i in range(1, 5)], ctx) == []
    [violation] = rules.object_store_quorum([node(f"minio-0{i}") for i in range(1, 4)], ctx)
    assert "runs 3 object-store nodes" in violation.message


# ------------------------------------------------------------------- budget


def priced_stack() -> list[Resource]:
    # 2 x ccx33 (48.49) + cx22 (3.79) + 100 GB volume (4.40) + primary IPv4 (0.50) = 105.67
    return [
        server("worker-01", "11", "worker", serverType="ccx33"),
        server("worker-02", "12", "worker", serverType="CCX33"),
        server("lb-01", "13", "lb", serverType="cx22"),
        res(VOLUME, "pg", "14", size=100),
        res(PRIMARY_IP, "lb-ipv4", "15", type="ipv4"),
    ]


def test_cost_from_the_price_table() -> None:
    items, problems, currency = rules.stack_cost(priced_stack())
    assert problems == [] and currency == "EUR"
    assert round(sum(i.monthly for i in items), 2) == 105.67


def test_within_budget_passes() -> None:
    assert rules.monthly_budget(priced_stack(), Context(stack={"selextract:monthlyBudget": "150"})) == []
    assert rules.monthly_budget(priced_stack(), Context(policy={"monthlyBudget": 105.67})) == []


def test_no_budget_no_check() -> None:
    assert rules.monthly_budget(priced_stack()) == []


def test_over_budget_fails() -> None:
    [violation] = rules.monthly_budget(priced_stack(), Context(stack={"selextract:monthlyBudget": 100}))
    assert "monthly cost 105.67 EUR exceeds the budget 100.00 EUR (selextract:monthlyBudget)" in violation.message
    assert "2 x server ccx33 = 96.98" in violation.message


def test_policy_config_budget_wins_over_stack_config() -> None:
    ctx = Context(policy={"monthlyBudget": 50}, stack={"selextract:monthlyBudget": 1000})
    [violation] = rules.monthly_budget(priced_stack(), ctx)
    assert "budget 50.00 EUR (policy config monthlyBudget)" in violation.message


def test_unpriceable_server_type_fails() -> None:
    stack = [server("x-01", "11", "api", serverType="cx99")]
    [violation] = rules.monthly_budget(stack, Context(policy={"monthlyBudget": 100}))
    assert "server type cx99, which is not in the price table infra/data/hetzner.yaml" in violation.message


# ------------------------------------------------------------------ registry


def test_every_rule_is_registered_once_with_an_enforcement_level() -> None:
    assert len(rules.RULES_BY_NAME) == len(rules.RULES) == 10
    for r in rules.RULES:
        assert r.enforcement in ("advisory", "mandatory")
        assert r.severity in ("low", "medium", "high", "critical")
        assert r.check.__doc__, f"{r.name}: the docstring is the remediation text"


def test_check_stack_runs_resource_rules_on_every_resource() -> None:
    stack = [server("api-01", "11", "api", labels={})]
    found = rules.check_stack(stack)
    assert [v.message.split(":")[0] for v in found["server-required-labels"]] == ["Server api-01"]
    assert "servers-behind-firewall-and-in-private-network" in found


def test_uploaded_script_prose_and_flags_are_not_credentials() -> None:
    """Comments that talk about a password and a `--password-from-stdin` flag are not
    credentials; a real `requirepass` line in the same file still is."""
    script = (
        "#!/bin/sh\n# the admin password is read on first start only\n"
        'printf "%s" "$P" | tool admin reset-admin-password --password-from-stdin\n'
    )
    props = {"uploads": [{"file": "/usr/local/bin/wrapper", "content": script}]}
    assert [why for _, why, _, _ in rules.credentials(props)] == []
    props["uploads"][0]["content"] = script + "requirepass hunter2hunter2\n"
    assert [value for _, _, value, _ in rules.credentials(props)] == ["hunter2hunter2"]
