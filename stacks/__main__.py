"""The Pulumi program: stack YAML → settings → plan → hosts → services → exports.
Only wiring lives here; each step is a module of `infra/`."""

import pulumi

from infra.config import load_from_pulumi
from infra.dns import DnsRecords
from infra.exports import stack_exports
from infra.hosts.fleet import fleet_for
from infra.images import current_version, images_for_fleet, registry_auth
from infra.secrets import StackSecrets
from infra.services import deploy_services
from infra.specs import build_specs
from infra.specs.objectstore import BACKUP_KEY_SECRET
from infra.specs.postgres import app_slot
from infra.topology import plan

settings = load_from_pulumi()
the_plan = plan(settings)
secrets = StackSecrets("secrets", settings)
fleet = fleet_for(settings, the_plan, registry_auth=registry_auth(settings, the_plan, secrets))
version = current_version(settings.release, settings.image_tag)
specs = build_specs(the_plan, settings, version.tag)
images = images_for_fleet(settings, the_plan, fleet.hosts, specs, secrets=secrets, version=version)
deploy_services(
    images.specs,
    hosts=images.hosts,
    secrets=secrets,
    images=images.names,
    stack=settings.stack,
    active_slot=app_slot(settings.rotation),
)

if settings.dns.enabled and settings.dns.zone:
    DnsRecords("dns", the_plan, settings.dns.zone, fleet.hosts[the_plan.entry_host].public_ip or "")

for key, value in stack_exports(settings, the_plan, fleet.hosts, version).items():
    pulumi.export(key, value)
# the backup login (the `backups` bucket only), a secret output: only ops reads it (ops/access.py)
pulumi.export(BACKUP_KEY_SECRET, secrets.get(BACKUP_KEY_SECRET))
