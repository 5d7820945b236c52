"""Let's Encrypt as the Hetzner stacks do it, against a real ACME server: Pebble (Let's
Encrypt's RFC 8555 test server, built from its Go module by scripts/setup-tools.sh).

The entry nginx and the certbot sidecar run from the container specs of the phase-1
stack file (rendered nginx.conf, renewal loop, bootstrap certificate, shared volumes),
with `tls.acmeServer` pointed at Pebble and the local images. Pebble checks the HTTP-01
challenge by fetching http://<domain>/.well-known/acme-challenge/… from the entry (the
stack's domains are Docker DNS aliases of the entry container here), certbot installs
the certificate where the proxy reads it, and after a reload nginx serves it.
"""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.base import SECRET_MARK, ContainerSpec
from infra.tls import bootstrap_certificate
from infra.topology import Role, plan
from tests.e2e.stack import ROOT, docker, remove_leftovers, require_toolchain

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

NAME = "acme-t"
NET = f"{NAME}-net"
CACHE = Path.home() / ".cache" / "selextract"
PEBBLE_BIN = CACHE / "bin" / "pebble"
PEBBLE_CERTS = CACHE / "pebble"
CERTBOT_IMAGE = "selextract/certbot:2"
LABEL = f"selextract.stack={NAME}"
SECRETS = {"monitoringPassword": "acme-test-monitoring"}


def _settings(tmp: Path):  # type: ignore[no-untyped-def]
    doc = yaml.safe_load((ROOT / "Pulumi.phase1.yaml").read_text())
    config = doc["config"]
    config["selextract:tls"] = {**config["selextract:tls"], "acmeServer": "https://pebble:14000/dir"}
    config["selextract:images"] = {"nginx": "selextract/nginx:1.22", "certbot": CERTBOT_IMAGE}
    path = tmp / f"Pulumi.{NAME}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_stack_file(path)


def _create(spec: ContainerSpec, *extra: str) -> str:
    """`docker create` + uploads of one spec, as the Pulumi docker provider would."""
    args = ["create", "--name", spec.name, "--network", NET, "--label", LABEL]
    if spec.entrypoint:
        args += ["--entrypoint", spec.entrypoint[0]]
    for key, value in spec.env.items():
        args += ["-e", f"{key}={value}"]
    for mount in spec.mounts:
        args += ["-v", f"{mount.volume}:{mount.target}"]
    image_and_cmd = [spec.image, *spec.entrypoint[1:], *spec.command]
    docker(*args, *extra, *image_and_cmd)
    with tempfile.TemporaryDirectory() as stage:
        for upload in spec.uploads:
            path = Path(stage) / upload.path.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(SECRET_MARK.sub(lambda m: SECRETS[m.group(1)], upload.content))
            path.chmod(0o755 if upload.executable else 0o644)
        docker("cp", f"{stage}/.", f"{spec.name}:/")
    return spec.name


def _served_certificate(port: int, server_name: str) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    require_toolchain("ACME")
    missing = [str(p) for p in (PEBBLE_BIN, PEBBLE_CERTS / "cert.pem") if not p.exists()]
    if docker("image", "inspect", CERTBOT_IMAGE, check=False).returncode != 0:
        missing.append(f"{CERTBOT_IMAGE} (scripts/build-images.sh)")
    if missing:
        pytest.fail("ACME tests need (scripts/setup-tools.sh, scripts/build-images.sh): " + ", ".join(missing))
    tmp = tmp_path_factory.mktemp(NAME)
    settings = _settings(tmp)
    the_plan = plan(settings)
    host = the_plan.placements_of(Role.ENTRY)[0].host
    specs = {s.name: s for s in build_specs(the_plan, settings) if s.host == host and s.role == Role.ENTRY}
    entry = next(s for s in specs.values() if "certbot" not in s.name)
    certbot = next(s for s in specs.values() if "certbot" in s.name)
    domains = [f"{r}.{settings.domain}" for r in settings.dns.records]
    cert, key = bootstrap_certificate("acme-test-seed", settings.domain)
    SECRETS.update(tlsBootstrapCert=cert, tlsBootstrapKey=key)

    remove_leftovers(NAME)
    config = {
        "pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/pebble/cert.pem",
            "privateKey": "/pebble/key.pem",
            "httpPort": 80,
            "tlsPort": 443,
            "externalAccountBindingRequired": False,
        }
    }
    (tmp / "pebble-config.json").write_text(json.dumps(config))
    try:
        docker("network", "create", "--label", LABEL, NET)
        docker(
            "run", "-d", "--name", f"{NAME}-pebble", "--network", NET, "--network-alias", "pebble", "--label", LABEL,
            "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0",
            "-v", f"{PEBBLE_BIN}:/usr/local/bin/pebble:ro", "-v", f"{PEBBLE_CERTS}:/pebble:ro",
            "-v", f"{tmp / 'pebble-config.json'}:/pebble-config.json:ro",
            "selextract/base:bookworm", "pebble", "-config", "/pebble-config.json",
        )  # fmt: skip
        for mount in {m.volume for s in specs.values() for m in s.mounts}:
            docker("volume", "create", "--label", LABEL, mount)
        aliases = [a for d in domains for a in ("--network-alias", d)]
        _create(entry, "-p", "127.0.0.1::443", "-p", "127.0.0.1::80", *aliases)
        docker("start", entry.name)
        _create(
            certbot,
            "-e", "REQUESTS_CA_BUNDLE=/pebble/pebble.minica.pem",
            "-v", f"{PEBBLE_CERTS}:/pebble:ro",
        )  # fmt: skip
        port_443 = int(docker("port", entry.name, "443/tcp").stdout.strip().rsplit(":", 1)[1])
        port_80 = int(docker("port", entry.name, "80/tcp").stdout.strip().rsplit(":", 1)[1])
        before = _served_certificate(port_443, domains[0])
        docker("start", certbot.name)
        deadline, logs = time.monotonic() + 180, ""
        while time.monotonic() < deadline:
            out = docker("logs", certbot.name, check=False)
            logs = out.stdout + out.stderr
            if "installed a new certificate" in logs:
                break
            time.sleep(1)
        issued_s = round(180 - (deadline - time.monotonic()), 1)
        docker("exec", entry.name, "nginx", "-s", "reload")  # what RELOAD_EVERY does every 6 h
        time.sleep(1)
        yield {
            "before": before,
            "after": _served_certificate(port_443, domains[0]),
            "logs": logs,
            "issued_s": issued_s,
            "domains": domains,
            "certbot": certbot,
            "entry": entry,
            "port_80": port_80,
        }
    finally:
        remove_leftovers(NAME)


def test_certbot_gets_a_certificate_over_http01_and_nginx_serves_it(deployed: dict[str, object]) -> None:
    logs = str(deployed["logs"])
    assert "installed a new certificate" in logs, logs[-3000:]
    before, after = deployed["before"], deployed["after"]
    assert isinstance(before, x509.Certificate) and isinstance(after, x509.Certificate)
    # the stack's self-signed bootstrap certificate until ACME replaced it
    assert before.issuer == before.subject
    assert "Pebble" in after.issuer.rfc4514_string(), after.issuer
    names = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sorted(names) == sorted(deployed["domains"])  # type: ignore[arg-type]


def test_renewal_loop_talks_to_the_configured_directory(deployed: dict[str, object]) -> None:
    certbot = deployed["certbot"]
    assert isinstance(certbot, ContainerSpec)
    script = next(u.content for u in certbot.uploads if u.path.endswith("selextract-certbot"))
    assert '--server "https://pebble:14000/dir"' in script and "--webroot -w /var/www/acme" in script
    # a second round keeps the certificate (not due for renewal): nothing re-issued
    out = docker(
        "exec", certbot.name, "certbot", "certonly", "--webroot", "-w", "/var/www/acme", "--non-interactive",
        "--agree-tos", "--keep-until-expiring", "--server", "https://pebble:14000/dir", "--cert-name", "selextract",
        *[a for d in deployed["domains"] for a in ("-d", d)],  # type: ignore[attr-defined]
        check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "not yet due for renewal" in (out.stdout + out.stderr).lower(), out.stdout


def test_plain_http_redirects_to_https_but_serves_challenges(deployed: dict[str, object]) -> None:
    import httpx

    domains = deployed["domains"]
    assert isinstance(domains, list)
    with httpx.Client(base_url=f"http://127.0.0.1:{deployed['port_80']}", timeout=10) as client:
        redirect = client.get("/api/v1/tasks", headers={"Host": domains[0]})
        challenge = client.get("/.well-known/acme-challenge/missing-token", headers={"Host": domains[0]})
    assert redirect.status_code == 301 and redirect.headers["location"] == f"https://{domains[0]}/api/v1/tasks"
    assert challenge.status_code == 404  # served from the webroot, not redirected
