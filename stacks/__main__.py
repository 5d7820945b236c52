"""The Pulumi program: stack YAML → settings → plan → hosts → services → exports.
Only wiring lives here; each step is a module of `infra/`."""

import pulumi

from infra.config import load_from_pulumi
from infra.dns import DnsRecords
from infra.exports import stack_exports
from infra.hosts.fleet import fleet_for
from infra.images import AppImages, current_version, pinned_images
from infra.secrets import StackSecrets
from infra.services import deploy_services
from infra.specs import build_specs
from infra.specs.context import BUILD_APP, BUILD_WORKER
from infra.specs.postgres import app_slot
from infra.topology import plan

settings = load_from_pulumi()
the_plan = plan(settings)
secrets = StackSecrets("secrets", settings)
fleet = fleet_for(settings, the_plan)
version = current_version(settings.release, settings.image_tag)
specs = build_specs(the_plan, settings, version.tag)
builds_on = {fleet.hosts[s.host].engine: fleet.hosts[s.host] for s in specs if s.image in (BUILD_APP, BUILD_WORKER)}
images = {
    engine: pinned_images(version)
    if version.pinned
    else AppImages(
        f"images-{engine}",
        provider=host.provider,
        version=version,
        base_image=settings.images.python_base,
        opts=pulumi.ResourceOptions(depends_on=host.ready),
    ).names
    for engine, host in builds_on.items()
}
deploy_services(
    specs,
    hosts=fleet.hosts,
    secrets=secrets,
    images=images,
    stack=settings.stack,
    active_slot=app_slot(settings.rotation),
)

if settings.dns.enabled and settings.dns.zone:
    DnsRecords("dns", the_plan, settings.dns.zone, fleet.hosts[the_plan.entry_host].public_ip or "")

for key, value in stack_exports(settings, the_plan, fleet.hosts, version).items():
    pulumi.export(key, value)
