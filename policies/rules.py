"""Selextract's policy rules as pure functions over plain resource data.

A rule sees what the Pulumi engine shows a policy pack: one resource's type and input
properties (resource rules), or every resource of the stack (stack rules). Properties
are plain Python data in which

- a string the engine marked as a Pulumi secret is a `SecretText` (a `str` subclass,
  so rules that do not care read it like any string), and
- a value that is not known yet (during `pulumi preview`) is `UNKNOWN`.

No Pulumi import here: `policies/pack.py` wraps each rule as a pulumi-policy policy,
and the tests call the rules directly with hand-written and recorded inputs. Messages
name the resource, the property and what to do; they never contain a secret's value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
FIREWALL_ATTACHMENT = "hcloud:index/firewallAttachment:FirewallAttachment"
SERVER_NETWORK = "hcloud:index/serverNetwork:ServerNetwork"
PLACEMENT_GROUP = "hcloud:index/placementGroup:PlacementGroup"
VOLUME = "hcloud:index/volume:Volume"
PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp"
LOAD_BALANCER = "hcloud:index/loadBalancer:LoadBalancer"
CONTAINER = "docker:index/container:Container"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"

NAMESPACE = "selextract"
REQUIRED_LABELS = ("project", "phase", "role")
# Ports that must never be reachable from the whole internet: SSH and the data services.
FORBIDDEN_PUBLIC_PORTS = {22: "ssh", 5432: "postgres", 6379: "redis", 9000: "object store (S3 API)"}
ENTRY_ROLES = ("entry", "lb")
ENTRY_NAME = re.compile(r"-(entry|lb)-\d+$")
ENTRY_PUBLIC_PORTS = (80, 443)
DATA_ROLES = ("postgres", "redis", "objectstore")
REPLICATED_ROLES = ("api", "worker", "objectstore")
OBJECT_STORE_ROLE = "objectstore"
MIN_OBJECT_STORE_NODES = 4
# Private and loopback ranges a port may be published on without being public.
NON_PUBLIC_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")
)


class SecretText(str):
    """A string the Pulumi engine marked as secret."""

    __slots__ = ()


class _Unknown:
    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown during preview>"

    def __bool__(self) -> bool:
        return False


UNKNOWN = _Unknown()


def is_secret(value: Any) -> bool:
    return isinstance(value, SecretText)


@dataclass(frozen=True)
class Resource:
    """One resource of the stack as a stack rule sees it."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    # The resource's ID where it is known (Pulumi mocks, or after `up`); references by ID
    # are resolved with it when `deps` does not say which resource a property points at.
    id: str | None = None
    # property name -> URNs of the resources whose outputs that property was built from
    deps: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.type.rsplit(':', 1)[-1]} {self.name}"


@dataclass(frozen=True)
class Violation:
    message: str
    urn: str | None = None


@dataclass(frozen=True)
class Context:
    """Policy config (`--policy-pack-config`, per policy) and the stack's own config
    (`selextract:…` keys as the engine hands them to the pack)."""

    policy: Mapping[str, Any] = field(default_factory=dict)
    stack: Mapping[str, Any] = field(default_factory=dict)
    # values of the stack's secret config keys: they must never appear in plain text
    secret_values: frozenset[str] = frozenset()

    def stack_value(self, key: str, default: Any = None) -> Any:
        """A stack config value, parsed from the engine's JSON strings; `key` may be dotted
        (`ssh.port`) to reach into an object value (`selextract:ssh`)."""
        head, _, rest = key.partition(".")
        value = _parse_json(self.stack.get(f"{NAMESPACE}:{head}", self.stack.get(head)))
        for part in rest.split(".") if rest else ():
            value = value.get(part) if isinstance(value, Mapping) else None
        return default if value is None else value


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ---------------------------------------------------------------------------- helpers


def _labels(props: Mapping[str, Any]) -> dict[str, Any]:
    """Labels as a dict, from hcloud's `labels` map or Docker's `[{label, value}]` list."""
    raw = props.get("labels")
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        return {
            item.get("label"): item.get("value")
            for item in raw
            if isinstance(item, Mapping) and isinstance(item.get("label"), str)
        }
    return {}


def _num(value: Any) -> Any:
    """Numbers arrive as JSON floats (5432.0); show whole ones as ints."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def _is_world(cidr: Any) -> bool:
    """True for a source that is the whole internet (0.0.0.0/0, ::/0)."""
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _is_public_bind(ip: Any) -> bool:
    """Whether publishing a container port on `ip` exposes it beyond this host's private
    and loopback interfaces. No address means Docker's default: every interface."""
    if ip in (None, "", "0.0.0.0", "::", "[::]"):
        return True
    try:
        addr = ipaddress.ip_address(str(ip).strip("[]"))
    except ValueError:
        return True  # not an address Docker would accept either; treat as public
    return not any(addr in net for net in NON_PUBLIC_NETS)


def _port_range(port: Any) -> tuple[int, int] | None:
    """hcloud firewall `port`: "22", "80-85" or "any"; None if it is unknown."""
    if port is UNKNOWN:
        return None
    if port in (None, "", "any"):
        return 1, 65535
    text = str(port)
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        return 1, 65535


def _inbound_world_rules(
    props: Mapping[str, Any],
) -> Iterator[tuple[int, Mapping[str, Any], tuple[int, int], list[str]]]:
    """(index, rule, port range, world sources) of every inbound tcp/udp rule open to the internet."""
    for i, rule in enumerate(_list(props.get("rules"))):
        if not isinstance(rule, Mapping):
            continue
        if str(rule.get("direction") or "in") != "in" or str(rule.get("protocol") or "") not in ("tcp", "udp"):
            continue
        ports = _port_range(rule.get("port"))
        world = [s for s in _list(rule.get("sourceIps")) if _is_world(s)]
        if ports and world:
            yield i, rule, ports, world


def _describe_rule(i: int, rule: Mapping[str, Any]) -> str:
    desc = rule.get("description")
    return f"rule {i}" + (f" ({desc})" if isinstance(desc, str) and desc else "")


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, str | None]]:
    """(path, leaf, key of the innermost mapping) for every scalar leaf of `value`."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(v, Mapping | list | tuple):
                yield from walk(v, sub)
            else:
                yield sub, v, str(k)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, value, None


# ------------------------------------------------------------------ resource rules


def server_labels(type_: str, props: Mapping[str, Any], ctx: Context = Context()) -> list[str]:
    """Every hcloud server carries the project/phase/role labels."""
    if type_ != SERVER:
        return []
    if props.get("labels") is UNKNOWN:
        return []
    required = tuple(ctx.policy.get("requiredLabels") or REQUIRED_LABELS)
    labels = _labels(props)
    # a label computed from an output not known during preview is checked again by `pulumi up`
    missing = [k for k in required if labels.get(k) is not UNKNOWN and not str(labels.get(k) or "").strip()]
    out = []
    if missing:
        out.append(
            f"server has no {'/'.join(missing)} label{'s' if len(missing) > 1 else ''}; every server must carry "
            f"{', '.join(required)} (infra/hosts/hetzner.py labels()) so cost reports, firewall selectors and "
            "operators can tell what it is"
        )
    project = ctx.policy.get("project", NAMESPACE)
    if "project" in required and labels.get("project") not in (None, "", UNKNOWN, project):
        out.append(f"server label project={labels['project']!s} should be project={project}")
    return out


def firewall_public_ports(type_: str, props: Mapping[str, Any], ctx: Context = Context()) -> list[str]:
    """No inbound firewall rule opens SSH or a database/object-store port to 0.0.0.0/0 or ::/0."""
    if type_ != FIREWALL:
        return []
    forbidden = dict(FORBIDDEN_PUBLIC_PORTS)
    for port in ctx.policy.get("forbiddenPorts") or ():
        forbidden.setdefault(int(port), f"port {port}")
    ssh_port = ctx.stack_value("ssh.port")
    if isinstance(ssh_port, int) and ssh_port not in forbidden:
        forbidden[ssh_port] = "ssh (selextract:ssh.port)"
    out = []
    for i, rule, (low, high), world in _inbound_world_rules(props):
        hits = [f"{p} ({what})" for p, what in sorted(forbidden.items()) if low <= p <= high]
        if hits:
            out.append(
                f"firewall {_describe_rule(i, rule)} opens {rule.get('protocol')} {', '.join(hits)} to "
                f"{' and '.join(world)}; SSH must only be open to adminCidrs and database/object-store ports "
                "only on the private network"
            )
    return out


def container_public_ports(type_: str, props: Mapping[str, Any], ctx: Context = Context()) -> list[str]:
    """Only the entry container (nginx/HAProxy) publishes on a public address, and only 80/443."""
    if type_ != CONTAINER:
        return []
    name = str(props.get("name") or "")
    role = _labels(props).get(f"{NAMESPACE}.role")
    entry_roles = tuple(ctx.policy.get("entryRoles") or ENTRY_ROLES)
    is_entry = role in entry_roles or bool(ENTRY_NAME.search(name))
    allowed = tuple(int(p) for p in ctx.policy.get("entryPublicPorts") or ENTRY_PUBLIC_PORTS)
    out = []
    if props.get("networkMode") == "host" and not is_entry:
        out.append(
            f"container {name} uses network_mode=host, which exposes every port it listens on on the host's "
            "public address; publish ports on the private IP instead"
        )
    for port in _list(props.get("ports")):
        if not isinstance(port, Mapping) or port.get("ip") is UNKNOWN:
            continue
        ip = port.get("ip")
        if not _is_public_bind(ip):
            continue
        where = f"{ip}" if ip else "every address (no ip given)"
        internal = _num(port.get("internal"))
        external = _num(port.get("external", internal))
        if not is_entry:
            out.append(
                f"container {name} publishes port {internal} (host port {external}) on {where}; only the entry "
                f"(role {'/'.join(entry_roles)}) may publish on a public address, internal services publish on "
                "the host's private IP"
            )
        elif external not in allowed:
            out.append(
                f"entry container {name} publishes host port {external} on {where}; the entry may only publish "
                f"{'/'.join(map(str, allowed))} publicly"
            )
    return out


_CREDENTIAL_KEY = re.compile(r"(password|passwd|passphrase|secret|token|privatekey|secretkey|apikey|webhookurl)$")
_NOT_CREDENTIAL_KEY = re.compile(r"(file|path|ref|name|id|ids|version|length|enabled)$")
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@", re.I)
_SECRET_FLAG = re.compile(r"^--?(requirepass|password|passwd|pass|secret|token)(=(.+))?$", re.I)
_CONFIG_CREDENTIAL = re.compile(
    r"(?im)(?:^|[\s{,])[\"']?[\w.-]*(?:password|passwd|secret|token|requirepass)(?:[_-]?key)?[\"']?"
    r"\s*[:= ]\s*['\"]?([^\s'\",#}]+)"
)
_SECRET_FILE = re.compile(r"(?i)(htpasswd|credentials|privkey|\.key$|secret|password)")


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _is_credential_key(key: str) -> bool:
    norm = _normalise_key(key)
    return bool(_CREDENTIAL_KEY.search(norm)) and not _NOT_CREDENTIAL_KEY.search(norm)


def _is_reference(value: str) -> bool:
    """A value that points at a credential rather than being one."""
    return value.startswith(("$", "/", "{{", "%(", "@@secret:")) or value in ("true", "false")


def _credentials_in(
    key: str | None, value: str, context: Mapping[str, Any], previous: Any = None
) -> list[tuple[str, str]]:
    """(why, the credential) for every credential `value` holds or is: a credential-named
    property, `NAME=value` with a credential NAME, a URL's password, `--password=x` or the
    argument after `--requirepass`, or a password/secret/token line of an uploaded file."""
    found: list[tuple[str, str]] = []
    if key and _is_credential_key(key) and value and not _is_reference(value):
        found.append((f"property '{key}' holds a credential", value))
    env_name, eq, env_value = value.partition("=")
    if (
        eq
        and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name)
        and _is_credential_key(env_name)
        and env_value
        and not _is_reference(env_value)
    ):
        found.append((f"environment variable {env_name} holds a credential", env_value))
    found += [("a URL carries a password", m) for m in _URL_PASSWORD.findall(value) if not _is_reference(m)]
    flag = _SECRET_FLAG.match(value)
    if flag and flag.group(3) and not _is_reference(flag.group(3)):
        found.append((f"the argument {value.split('=', 1)[0]} carries a credential", flag.group(3)))
    prev = _SECRET_FLAG.match(previous) if isinstance(previous, str) else None
    if prev and not prev.group(2) and not value.startswith("-") and not _is_reference(value):
        found.append((f"it follows the argument {previous}", value))
    if key == "content" and value:
        file = str(context.get("file") or "?")
        # comment lines are prose, and a value that is itself a flag (`--password-from-stdin`) is no credential
        text = "\n".join(line for line in value.splitlines() if not line.lstrip().startswith(("#", ";")))
        lines = [m for m in _CONFIG_CREDENTIAL.findall(text) if not _is_reference(m) and not m.startswith("-")]
        found += [(f"uploaded file {file} sets a password/secret/token", m) for m in lines]
        if not lines and _SECRET_FILE.search(file):
            found.append((f"uploaded file {file} holds credentials", value))
    return found


def _leaves_with_context(
    value: Any, path: str = "", parent: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, Any, str | None, Mapping[str, Any], Any]]:
    """(path, leaf, key, enclosing mapping, previous list element) for every scalar leaf."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(v, Mapping | list | tuple):
                yield from _leaves_with_context(v, sub, value)
            else:
                yield sub, v, str(k), value, None
    elif isinstance(value, list | tuple):
        key = path.rsplit(".", 1)[-1].split("[", 1)[0] if path else None
        for i, v in enumerate(value):
            if isinstance(v, Mapping | list | tuple):
                yield from _leaves_with_context(v, f"{path}[{i}]", parent)
            else:
                yield f"{path}[{i}]", v, key, parent or {}, value[i - 1] if i else None


def credentials(props: Mapping[str, Any]) -> Iterator[tuple[str, str, str, bool]]:
    """(path, why, credential, is it a Pulumi secret) for every credential in `props`."""
    for path, leaf, key, parent, previous in _leaves_with_context(props):
        if isinstance(leaf, str) and leaf:
            for why, value in _credentials_in(key, leaf, parent, previous):
                yield path, why, value, is_secret(leaf)


def secrets_as_pulumi_secrets(type_: str, props: Mapping[str, Any], ctx: Context = Context()) -> list[str]:
    """Credentials (passwords, tokens, keys, URLs with a password, config files that set
    one) reach a resource only as Pulumi secrets, never as plain inputs."""
    out: dict[str, str] = {}
    for path, why, _, secret in credentials(props):
        if not secret and path not in out:
            out[path] = (
                f"{path} is plain text but {why}; pass it as a Pulumi secret "
                "(pulumi.Output.secret, a RandomPassword, or `pulumi config set --secret`)"
            )
    return list(out.values())


# --------------------------------------------------------------------- stack rules


class _Index:
    """Lookups shared by the stack rules: resources by type, URN and ID, and which
    resources a property refers to."""

    def __init__(self, resources: Sequence[Resource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in resources if r.urn}
        self.by_id: dict[str, list[Resource]] = {}
        for r in resources:
            if r.id:
                self.by_id.setdefault(str(r.id), []).append(r)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def refs(self, res: Resource, prop: str, type_: str, value: Any = ...) -> list[Resource]:
        """Resources of `type_` that `res.props[prop]` refers to: through the engine's
        property dependencies, or by ID. `value` narrows the ID lookup to part of the property."""
        found: dict[int, Resource] = {}
        if value is ... or value is not None:
            for urn in res.deps.get(prop, ()):
                target = self.by_urn.get(urn)
                if target is not None and target.type == type_:
                    found[id(target)] = target
        raw = res.props.get(prop) if value is ... else value
        for _, leaf, _ in walk(raw):
            if isinstance(leaf, float) and leaf.is_integer():
                leaf = int(leaf)  # IDs travel as JSON numbers
            if isinstance(leaf, int | str) and not isinstance(leaf, bool):
                for target in self.by_id.get(str(leaf), ()):
                    if target.type == type_:
                        found[id(target)] = target
        return list(found.values())

    def firewalls_of(self, server: Resource) -> list[Resource]:
        """Firewalls applied to `server`: by FirewallAttachment, the server's firewallIds,
        or a firewall's apply_to (server ID or label selector)."""
        found = {id(f): f for f in self.refs(server, "firewallIds", FIREWALL)}
        for attachment in self.of_type(FIREWALL_ATTACHMENT):
            if server in self.refs(attachment, "serverIds", SERVER):
                for fw in self.refs(attachment, "firewallId", FIREWALL):
                    found[id(fw)] = fw
                if not self.refs(attachment, "firewallId", FIREWALL):
                    found[id(attachment)] = attachment  # firewall not resolvable, but attached
        labels = _labels(server.props)
        for fw in self.of_type(FIREWALL):
            targets = [t for t in _list(fw.props.get("applyTos")) if isinstance(t, Mapping)]
            by_server = any(server in self.refs(fw, "applyTos", SERVER, t.get("server")) for t in targets)
            by_label = any(
                isinstance(t.get("labelSelector"), str) and _selector_matches(t["labelSelector"], labels)
                for t in targets
            )
            if by_server or by_label:
                found[id(fw)] = fw
        return list(found.values())

    def in_private_network(self, server: Resource) -> bool:
        if any(isinstance(n, Mapping) for n in _list(server.props.get("networks"))):
            return True
        return any(server in self.refs(sn, "serverId", SERVER) for sn in self.of_type(SERVER_NETWORK))


def _selector_matches(selector: str, labels: Mapping[str, Any]) -> bool:
    """hcloud label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (all must hold)."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            ok = str(labels.get(k)) != v
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            ok = str(labels.get(k)) == v
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _role(server: Resource) -> str:
    role = _labels(server.props).get("role")
    return role if isinstance(role, str) else "?"


def servers_firewalled_and_private(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """Every hcloud server is behind a firewall and joined to the private network."""
    index = _Index(resources)
    out = []
    for server in index.of_type(SERVER):
        if not index.firewalls_of(server):
            out.append(
                Violation(
                    f"server {server.name} (role {_role(server)}) is behind no firewall: no FirewallAttachment, "
                    "firewallIds or firewall apply_to selects it, so every port on its public address is open",
                    server.urn,
                )
            )
        if not index.in_private_network(server):
            out.append(
                Violation(
                    f"server {server.name} (role {_role(server)}) is not in the private network (no ServerNetwork "
                    "and no networks entry); internal services listen only on private addresses",
                    server.urn,
                )
            )
    return out


def data_hosts_no_public_web(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """Database and object-store hosts expose no 80/443 to the internet, neither through
    their firewall nor through a container published on a public address."""
    index = _Index(resources)
    data_roles = tuple(ctx.policy.get("dataRoles") or DATA_ROLES)
    out = []
    data_hosts: dict[str, Resource] = {}
    for server in index.of_type(SERVER):
        role = _role(server)
        if role not in data_roles:
            continue
        name = str(server.props.get("name") or server.name)
        data_hosts[name] = server
        for fw in index.firewalls_of(server):
            web: set[int] = set()
            world: set[str] = set()
            for _, _, (low, high), sources in _inbound_world_rules(fw.props):
                if hits := {p for p in (80, 443) if low <= p <= high}:
                    web |= hits
                    world |= set(sources)
            if web:
                out.append(
                    Violation(
                        f"server {server.name} (role {role}) is behind firewall {fw.name}, which opens "
                        f"{'/'.join(map(str, sorted(web)))} to {' and '.join(sorted(world))}; database and "
                        "object-store hosts serve nothing publicly (give them the internal firewall)",
                        server.urn,
                    )
                )
    for container in index.of_type(CONTAINER):
        host = _labels(container.props).get(f"{NAMESPACE}.host")
        server = next((s for n, s in data_hosts.items() if isinstance(host, str) and n.endswith(f"-{host}")), None)
        if server is None:
            continue
        for port in _list(container.props.get("ports")):
            if not isinstance(port, Mapping) or port.get("ip") is UNKNOWN:
                continue
            if _is_public_bind(port.get("ip")) and {port.get("internal"), port.get("external")} & {80, 443}:
                out.append(
                    Violation(
                        f"container {container.props.get('name') or container.name} on {_role(server)} host "
                        f"{host} publishes {_num(port.get('external'))} on a public address; database and object-store "
                        "hosts serve nothing publicly",
                        container.urn,
                    )
                )
    return out


def replicated_roles_spread(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """Servers of a replicated role (API, worker, object store) sit in a spread placement
    group, so one physical host failing takes down at most one replica."""
    index = _Index(resources)
    replicated = tuple(ctx.policy.get("replicatedRoles") or REPLICATED_ROLES)
    by_role: dict[str, list[Resource]] = {}
    for server in index.of_type(SERVER):
        by_role.setdefault(_role(server), []).append(server)
    out = []
    for role, servers in sorted(by_role.items()):
        if role not in replicated or len(servers) < 2:
            continue
        for server in servers:
            value = server.props.get("placementGroupId")
            groups = index.refs(server, "placementGroupId", PLACEMENT_GROUP)
            if not groups and value is UNKNOWN:
                continue  # set from an output we cannot resolve yet
            if not groups and value in (None, "", 0):
                out.append(
                    Violation(
                        f"server {server.name} is one of {len(servers)} {role} servers but in no placement group; "
                        "replicas must be spread over physical hosts (hcloud PlacementGroup type=spread)",
                        server.urn,
                    )
                )
            for group in groups:
                if group.props.get("type") not in ("spread", UNKNOWN):
                    out.append(
                        Violation(
                            f"server {server.name} ({role}) is in placement group {group.name} of type "
                            f"{group.props.get('type')!s}; replicated roles need type=spread",
                            server.urn,
                        )
                    )
    return out


def _stack_phase(index: _Index, ctx: Context) -> int | None:
    phase = ctx.stack_value("phase")
    try:
        if phase is not None:
            return int(phase)
    except (TypeError, ValueError):
        pass
    phases = []
    for server in index.of_type(SERVER):
        try:
            phases.append(int(_labels(server.props).get("phase")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return max(phases) if phases else None


def object_store_quorum(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """Phase 4 runs at least 4 object-store nodes (MinIO erasure coding needs 4 drives)."""
    index = _Index(resources)
    phase = _stack_phase(index, ctx)
    if phase is None or phase < 4:
        return []
    minimum = int(ctx.policy.get("minNodes") or MIN_OBJECT_STORE_NODES)
    servers = [s for s in index.of_type(SERVER) if _role(s) == OBJECT_STORE_ROLE]
    if index.of_type(SERVER):
        nodes, what = len(servers), "object-store servers"
    else:  # the local simulation: one engine, one node per planned host
        hosts = {
            _labels(c.props).get(f"{NAMESPACE}.host")
            for c in index.of_type(CONTAINER)
            if _labels(c.props).get(f"{NAMESPACE}.role") == OBJECT_STORE_ROLE
        }
        nodes, what = len(hosts - {None}), "object-store nodes"
    if nodes < minimum:
        return [
            Violation(
                f"phase {phase} runs {nodes} {what}; the object-store cluster needs at least {minimum} "
                "(MinIO erasure coding; selextract:objectStore.nodes)"
            )
        ]
    return []


@dataclass(frozen=True)
class CostItem:
    resource: Resource
    what: str
    monthly: float


def stack_cost(resources: Sequence[Resource]) -> tuple[list[CostItem], list[Violation], str]:
    """Monthly cost of the Hetzner resources from the price table (`infra/data/hetzner.yaml`),
    priced as `infra/cost.py` prices a plan; plus resources that cannot be priced."""
    from infra.catalog import load_catalog

    catalog = load_catalog()
    items: list[CostItem] = []
    problems: list[Violation] = []
    for r in resources:
        if r.type == SERVER:
            st = r.props.get("serverType")
            if st is UNKNOWN:
                continue
            known = catalog.server_types.get(str(st).lower())
            if known is None:
                problems.append(
                    Violation(
                        f"server {r.name} has server type {st!s}, which is not in the price table "
                        "infra/data/hetzner.yaml; add it there or pick a listed type",
                        r.urn,
                    )
                )
                continue
            items.append(CostItem(r, f"server {known.name}", known.price))
        elif r.type == VOLUME and isinstance(r.props.get("size"), int | float):
            size = r.props["size"]
            items.append(CostItem(r, "volume", round(size * catalog.volume_per_gb, 2)))
        elif r.type == PRIMARY_IP and r.props.get("type") in ("ipv4", None):
            items.append(CostItem(r, "primary IPv4", catalog.primary_ipv4))
        elif r.type == LOAD_BALANCER:
            items.append(CostItem(r, "load balancer", catalog.load_balancer_lb11))
    return items, problems, catalog.currency


def monthly_budget(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """The stack's Hetzner resources cost no more per month than the budget: policy config
    `monthlyBudget`, else the stack's `selextract:monthlyBudget`; no budget, no check."""
    budget, source = ctx.policy.get("monthlyBudget"), "policy config monthlyBudget"
    if budget is None:
        budget, source = ctx.stack_value("monthlyBudget"), "selextract:monthlyBudget"
    if budget is None:
        return []
    budget = float(budget)
    items, problems, currency = stack_cost(resources)
    total = round(sum(i.monthly for i in items), 2)
    if total <= budget:
        return problems
    groups: dict[str, list[float]] = {}
    for item in items:
        groups.setdefault(item.what, []).append(item.monthly)
    biggest = sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:3]
    detail = ", ".join(f"{len(v)} x {k} = {sum(v):.2f}" for k, v in biggest)
    return [
        *problems,
        Violation(
            f"monthly cost {total:.2f} {currency} exceeds the budget {budget:.2f} {currency} ({source}); "
            f"largest items: {detail}. Pick smaller server types, fewer servers, or raise the budget",
        ),
    ]


def no_secret_in_plain_text(resources: Sequence[Resource], ctx: Context = Context()) -> list[Violation]:
    """No value that is a Pulumi secret anywhere in the stack (a generated password, a
    secret config value, a secret input) appears in any plain-text input."""
    minimum = int(ctx.policy.get("minSecretLength") or 8)
    secrets: set[str] = set(ctx.secret_values)
    for r in resources:
        secrets |= {value for _, _, value, secret in credentials(r.props) if secret}
        if r.type == RANDOM_PASSWORD and is_secret(r.props.get("result")):
            secrets.add(str(r.props["result"]))
    secrets = {s for s in secrets if len(s) >= minimum}
    if not secrets:
        return []
    out = []
    for r in resources:
        for path, leaf, _ in walk(r.props):
            if isinstance(leaf, str) and not is_secret(leaf) and any(s in leaf for s in secrets):
                out.append(
                    Violation(
                        f"{r.label}: {path} contains the value of a Pulumi secret in plain text; build it with "
                        "pulumi.Output.secret (or from the secret Output) so it stays encrypted",
                        r.urn,
                    )
                )
    return out


# ------------------------------------------------------------------------ registry

Enforcement = Literal["advisory", "mandatory", "remediate", "disabled"]
Severity = Literal["low", "medium", "high", "critical"]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    enforcement: Enforcement
    kind: Literal["resource", "stack"]
    check: Callable[..., list[Any]]
    severity: Severity = "high"
    # JSON-schema properties of the rule's policy config (`--policy-pack-config`)
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


RULES: tuple[Rule, ...] = (
    Rule(
        "server-required-labels",
        "Every Hetzner server carries the project, phase and role labels.",
        "mandatory",
        "resource",
        server_labels,
        "medium",
        {"requiredLabels": {"type": "array", "items": {"type": "string"}}, "project": {"type": "string"}},
    ),
    Rule(
        "firewall-no-public-ssh-or-database-ports",
        "No firewall rule opens SSH (22) or a database/object-store port (5432, 6379, 9000) to 0.0.0.0/0 or ::/0.",
        "mandatory",
        "resource",
        firewall_public_ports,
        "critical",
        {"forbiddenPorts": {"type": "array", "items": {"type": "integer"}}},
    ),
    Rule(
        "servers-behind-firewall-and-in-private-network",
        "Every Hetzner server is behind a firewall and joined to the private network.",
        "mandatory",
        "stack",
        servers_firewalled_and_private,
        "critical",
    ),
    Rule(
        "data-hosts-no-public-web",
        "Database and object-store hosts expose no 80/443 to the internet.",
        "mandatory",
        "stack",
        data_hosts_no_public_web,
        "high",
        {"dataRoles": {"type": "array", "items": {"type": "string"}}},
    ),
    Rule(
        "replicated-roles-in-spread-placement-groups",
        "Servers of a replicated role (api, worker, objectstore) are in a spread placement group.",
        "mandatory",
        "stack",
        replicated_roles_spread,
        "medium",
        {"replicatedRoles": {"type": "array", "items": {"type": "string"}}},
    ),
    Rule(
        "only-entry-publishes-publicly",
        "No container publishes a port on a public address except the entry (nginx/HAProxy) on 80/443.",
        "mandatory",
        "resource",
        container_public_ports,
        "critical",
        {
            "entryRoles": {"type": "array", "items": {"type": "string"}},
            "entryPublicPorts": {"type": "array", "items": {"type": "integer"}},
        },
    ),
    Rule(
        "secrets-only-as-pulumi-secrets",
        "Passwords, tokens, keys and credential-bearing URLs/config files are passed only as Pulumi secrets.",
        "mandatory",
        "resource",
        secrets_as_pulumi_secrets,
        "critical",
    ),
    Rule(
        "no-secret-value-in-plain-text",
        "No secret value (generated password, secret config, secret input) appears in a plain-text input.",
        "mandatory",
        "stack",
        no_secret_in_plain_text,
        "critical",
        {"minSecretLength": {"type": "integer", "minimum": 1}},
    ),
    Rule(
        "phase4-object-store-quorum",
        "Phase 4 runs at least 4 object-store nodes.",
        "mandatory",
        "stack",
        object_store_quorum,
        "high",
        {"minNodes": {"type": "integer", "minimum": 1}},
    ),
    Rule(
        "monthly-budget",
        "The stack's Hetzner servers, volumes and IPs cost no more per month than the budget.",
        "mandatory",
        "stack",
        monthly_budget,
        "medium",
        {"monthlyBudget": {"type": "number", "exclusiveMinimum": 0}},
    ),
)
RULES_BY_NAME = {r.name: r for r in RULES}


def check_resource(res: Resource, ctx: Context = Context()) -> dict[str, list[str]]:
    """Every resource rule's violations for one resource (rules with none are left out)."""
    out = {}
    for rule in RULES:
        if rule.kind == "resource" and (found := rule.check(res.type, res.props, ctx)):
            out[rule.name] = found
    return out


def check_stack(resources: Sequence[Resource], ctx: Context = Context()) -> dict[str, list[Violation]]:
    """Every rule's violations for a whole stack: resource rules on each resource, stack rules once."""
    out: dict[str, list[Violation]] = {}
    for rule in RULES:
        if rule.kind == "resource":
            found = [Violation(f"{r.label}: {m}", r.urn) for r in resources for m in rule.check(r.type, r.props, ctx)]
        else:
            found = rule.check(resources, ctx)
        if found:
            out[rule.name] = found
    return out
