"""Resources that break Selextract policies on purpose (or, with `bad:fixed true`, the same
resources done right). Which providers are used follows `bad:providers` (comma-separated:
command, docker, hcloud), so the test can use whatever plugins are installed."""

import pulumi
import pulumi_command as command

config = pulumi.Config("bad")
fixed = config.get_bool("fixed") or False
providers = {p.strip() for p in (config.get("providers") or "command").split(",") if p.strip()}
db_password = config.require_secret("dbPassword")


def credential(value: pulumi.Input[str]) -> pulumi.Output[str]:
    """A credential as the program should pass it (a secret), or leaked as plain text."""
    out = pulumi.Output.from_input(value)
    return pulumi.Output.secret(out) if fixed else pulumi.Output.unsecret(out)


# secrets-only-as-pulumi-secrets and no-secret-value-in-plain-text: a password in plain inputs
command.local.Command(
    "migrate",
    create="true",
    environment={
        "PGPASSWORD": credential(db_password),
        "DATABASE_URL": credential(pulumi.Output.concat("postgresql://app:", db_password, "@10.0.1.11/app")),
        "PGHOST": "10.0.1.11",
    },
)

if "docker" in providers:
    import pulumi_docker as docker

    # only-entry-publishes-publicly: Postgres published on every address
    docker.Container(
        "postgres",
        name="probe-db-01-postgres-1",
        image="selextract/postgres:15",
        ports=[docker.ContainerPortArgs(internal=5432, external=15432, ip="10.0.1.11" if fixed else "0.0.0.0")],
        envs=[pulumi.Output.concat("POSTGRES_PASSWORD=", credential(db_password))],
        labels=[docker.ContainerLabelArgs(label="selextract.role", value="postgres")],
        must_run=False,
        opts=pulumi.ResourceOptions(protect=False),
    )

if "hcloud" in providers:
    import pulumi_hcloud as hcloud

    labels = {"project": "selextract", "stack": pulumi.get_stack(), "phase": "1", "role": "postgres"}
    # firewall-no-public-ssh-or-database-ports: Postgres and SSH open to the internet
    firewall = hcloud.Firewall(
        "fw",
        rules=[
            hcloud.FirewallRuleArgs(
                direction="in",
                protocol="tcp",
                port=port,
                source_ips=["10.0.0.0/16"] if fixed else ["0.0.0.0/0", "::/0"],
            )
            for port in ("22", "5432")
        ],
    )
    network = hcloud.Network("net", ip_range="10.0.0.0/16")
    # server-required-labels, servers-behind-firewall-and-in-private-network
    server = hcloud.Server(
        "db-01",
        server_type="cx22",
        image="debian-12",
        location="fsn1",
        labels=labels if fixed else {"project": "selextract"},
    )
    if fixed:
        hcloud.FirewallAttachment("fw-attach", firewall_id=firewall.id.apply(int), server_ids=[server.id.apply(int)])
        hcloud.ServerNetwork("db-01-private", server_id=server.id.apply(int), network_id=network.id.apply(int))
