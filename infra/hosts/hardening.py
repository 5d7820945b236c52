"""Host hardening rendered once from the same pieces for cloud-init (hcloud servers) and
for the SSH-run script (dedicated servers), so both paths harden identically."""

from __future__ import annotations

from pathlib import Path

from infra.config import Settings
from infra.render import CONFIG_DIR, render
from infra.topology import HostPlan


def _pieces(settings: Settings, host: HostPlan) -> dict[str, object]:
    ssh = settings.ssh
    return {
        "host": host.name,
        "roles": [r.value for r in host.roles],
        "ssh_user": ssh.user,
        "ssh_port": ssh.port,
        "ssh_public_key": ssh.public_key or "",
        "sshd_config": render("sshd_config.j2", ssh_port=ssh.port, ssh_user=ssh.user),
        "fail2ban_jail": render("fail2ban-jail.local.j2", ssh_port=ssh.port),
        "sysctl_conf": (Path(CONFIG_DIR) / "sysctl.conf").read_text(),
        "logrotate": (Path(CONFIG_DIR) / "logrotate").read_text(),
        "admin_cidrs": list(settings.admin_cidrs),
        "public_ports": list(host.public_ports),
        "private_cidr": settings.network.cidr,
        "volumes": [{"role": v.role.value, "name": v.name} for v in host.volumes],
    }


def cloud_init(settings: Settings, host: HostPlan) -> str:
    text = render("cloud-init.yaml.j2", **_pieces(settings, host))
    if len(text.encode()) > 32 * 1024:
        raise ValueError(f"cloud-init for {host.name} is {len(text.encode())} bytes; Hetzner allows 32 KiB")
    return text


def hardening_script(settings: Settings, host: HostPlan) -> str:
    return render("harden.sh.j2", **_pieces(settings, host))


def bootstrap_script(settings: Settings) -> str:
    return render(
        "bootstrap-user.sh.j2",
        ssh_user=settings.ssh.user,
        ssh_port=settings.ssh.port,
        ssh_public_key=settings.ssh.public_key or "",
    )
