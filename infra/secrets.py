"""Every password the stack uses, as Pulumi secrets only.

Generated ones are RandomPassword resources whose `keepers` hold a rotation counter:
`pulumi config set rotation:postgresPassword 2 && pulumi up` makes a new one. Values the
operator sets with `pulumi config set --secret` win over generated ones. The app's two
database logins (infra/specs/postgres.py APP_USERS) take turns: a bump of
`rotation:postgresPassword` renews the owner's password and the login not in use.
"""

from __future__ import annotations

import pulumi
import pulumi_random as random

from infra.config import EXTERNAL_SECRETS, GENERATED_SECRETS, REGISTRY_SECRET, Settings
from infra.specs.postgres import APP_USERS, app_password_secret, app_slot_generation
from infra.specs.registry import HTPASSWD_SECRET
from infra.tls import bootstrap_certificate


class StackSecrets(pulumi.ComponentResource):
    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("selextract:index:StackSecrets", name, None, opts)
        self._values: dict[str, pulumi.Output[str]] = {}
        child = pulumi.ResourceOptions(parent=self)
        for key in GENERATED_SECRETS:
            given = settings.secret(key)
            if given is not None:
                self._values[key] = pulumi.Output.secret(given)
                continue
            password = random.RandomPassword(
                key,
                length=32,
                special=False,  # used inside connection URLs; 32 alphanumerics ≈ 190 bits
                keepers={"rotation": str(settings.rotation.get(key, 0))},
                opts=child,
            )
            self._values[key] = pulumi.Output.secret(password.result)
        for slot in range(len(APP_USERS)):
            generation = app_slot_generation(settings.rotation, slot)
            password = random.RandomPassword(
                app_password_secret(slot), length=32, special=False, keepers={"generation": str(generation)}, opts=child
            )
            self._values[app_password_secret(slot)] = pulumi.Output.secret(password.result)
        for key in EXTERNAL_SECRETS:
            given = settings.secret(key)
            if given is not None:
                self._values[key] = pulumi.Output.secret(given)
        self._registry_login(settings, child)
        domain = "localhost" if settings.target == "local" else settings.domain
        pair = self._values["appSecretKey"].apply(lambda seed: bootstrap_certificate(seed, domain))
        self._values["tlsBootstrapCert"] = pulumi.Output.secret(pair[0])
        self._values["tlsBootstrapKey"] = pulumi.Output.secret(pair[1])
        self.register_outputs({})

    def _registry_login(self, settings: Settings, child: pulumi.ResourceOptions) -> None:
        """The image registry's login: the operator's for an external registry; generated
        for the stack's own (multi-host stacks), with the htpasswd line it checks, whose
        bcrypt hash random makes once and keeps in state as a secret."""
        given = settings.secret(REGISTRY_SECRET)
        if given is not None:
            self._values[REGISTRY_SECRET] = pulumi.Output.secret(given)
            return
        if settings.target == "local":
            return
        password = random.RandomPassword(
            REGISTRY_SECRET,
            length=32,
            special=False,
            keepers={"rotation": str(settings.rotation.get(REGISTRY_SECRET, 0))},
            opts=child,
        )
        user = settings.registry.username
        self._values[REGISTRY_SECRET] = pulumi.Output.secret(password.result)
        self._values[HTPASSWD_SECRET] = pulumi.Output.secret(password.bcrypt_hash.apply(lambda h: f"{user}:{h}\n"))

    def get(self, name: str) -> pulumi.Output[str]:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"secret '{name}' is not configured for this stack") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._values)
