"""How ops commands reach a deployment's Postgres, Redis, result storage and workers.

Two ways, one interface (`Target`):
- **docker**: `docker exec` into the stack's containers, named from the plan
  (`{stack}-{host}-{role}-{n}`); locally on this engine, on Hetzner over
  `docker -H ssh://deploy@<ip>` (what the Pulumi Docker provider uses). Credentials never
  leave the containers: Postgres is reached on its socket as the `postgres` OS user,
  Redis with the container's `$REDIS_PASSWORD`, storage with the API container's env.
- **url**: the connection strings of the service itself (`DATABASE_URL`, `REDIS_URL`,
  `STORAGE_*`/`S3_*`, e.g. `--env-file /tmp/selextract-services/env`), with the Postgres
  and Redis client tools of this machine.

Everything below runs real tools (pg_dump, pg_restore, psql, redis-cli) and streams
files through pipes, so a multi-GB dump never sits in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from infra.config import Settings
from infra.specs.objectstore import BACKUP_KEY_SECRET, backup_access_key
from infra.specs.postgres import DB_NAME, DB_USER
from infra.specs.redis import ADMIN_PASSWORD_FILE, ADMIN_USER
from infra.topology import Plan, Role

AGENT_FILE = Path(__file__).with_name("results_agent.py")
FIELD_SEP = "\x1f"


class OpsError(RuntimeError):
    """An operation on the deployment failed; the message is meant for the operator."""


def run(
    argv: Sequence[str],
    *,
    what: str,
    input: bytes | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
) -> bytes:
    """Run argv; raise OpsError naming `what` with the tail of stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=stdin if input is None else None,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise OpsError(f"{what}: {argv[0]} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise OpsError(f"{what}: no answer within {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise OpsError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or 'no error output'}")
    return proc.stdout if proc.stdout is not None else b""


# --- where a command runs ------------------------------------------------------------------


@dataclass(frozen=True)
class Local:
    """This machine; `env` is added to the process environment (connection strings)."""

    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, cmd: Sequence[str], *, user: str | None = None) -> list[str]:
        return list(cmd)

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def describe(self) -> str:
        return "this machine"


@dataclass(frozen=True)
class Container:
    """A container of the stack, reached with `docker exec` (optionally on a remote engine)."""

    name: str
    docker_host: str | None = None

    def docker(self, *args: str) -> list[str]:
        return ["docker", *(["-H", self.docker_host] if self.docker_host else []), *args]

    def argv(self, cmd: Sequence[str], *, user: str | None = None, env_names: Sequence[str] = ()) -> list[str]:
        """`docker exec`; each of `env_names` is passed as `-e NAME`, which takes its value
        from the docker client's environment, so no command line holds it."""
        extra = [a for name in env_names for a in ("-e", name)]
        return self.docker("exec", "-i", *(["-u", user] if user else []), *extra, self.name, *cmd)

    def environ(self) -> dict[str, str] | None:
        return None

    def describe(self) -> str:
        return f"container {self.name}" + (f" on {self.docker_host}" if self.docker_host else "")

    def running(self) -> bool:
        try:
            out = run(self.docker("inspect", "-f", "{{.State.Running}}", self.name), what="docker inspect", timeout=30)
        except OpsError:
            return False
        return out.strip() == b"true"


Place = Local | Container


def libpq_url(url: str, db: str | None = None) -> str:
    """SQLAlchemy URL (`postgresql+psycopg://…`) → libpq URL, optionally another database."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise OpsError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    path = f"/{db}" if db is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.split("@", 1)[1]
    user = parts.netloc.split("@", 1)[0].split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{user}@{netloc}" if user else netloc, parts.path, parts.query, ""))


def _safe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(
        (parts.scheme, f"{parts.username + '@' if parts.username else ''}{host}{port}", parts.path, "", "")
    )


# --- Postgres ------------------------------------------------------------------------------

ROW_COUNTS_SQL = (
    "SELECT n.nspname || '.' || c.relname, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
    "false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1"
)


class Postgres:
    def __init__(self, place: Place, *, url: str | None = None, user: str = DB_USER, db: str = DB_NAME) -> None:
        if isinstance(place, Local) and not url:
            raise OpsError("Postgres on this machine needs DATABASE_URL")
        self.place, self.url, self.user = place, url, user
        self.db = urlsplit(libpq_url(url)).path.lstrip("/") or db if url else db

    def describe(self) -> str:
        return _safe(libpq_url(self.url)) if self.url else f"{self.place.describe()} (db {self.db})"

    def argv(self, tool: str, *args: str, db: str | None = None) -> list[str]:
        target = db or self.db
        if isinstance(self.place, Container):
            return self.place.argv([tool, "-U", self.user, "-d", target, *args], user="postgres")
        assert self.url is not None
        return [tool, "-d", _without_password(libpq_url(self.url, target)), *args]

    def _env(self) -> dict[str, str] | None:
        """The password goes to libpq in PGPASSWORD, never on the command line."""
        env = self.place.environ()
        if env is not None and self.url:
            password = urlsplit(self.url).password
            if password:
                env["PGPASSWORD"] = unquote(password)
        return env

    def query(self, sql: str, *, db: str | None = None, timeout: float = 120) -> list[list[str]]:
        out = run(
            self.argv("psql", "-X", "-A", "-t", "-q", "-F", FIELD_SEP, "-v", "ON_ERROR_STOP=1", db=db),
            input=sql.encode() + b"\n",
            env=self._env(),
            what=f"psql on {self.describe()}",
            timeout=timeout,
        )
        return [line.split(FIELD_SEP) for line in out.decode().splitlines() if line]

    def ping(self) -> str:
        return self.query("SELECT version()", timeout=20)[0][0]

    def row_counts(self, db: str | None = None) -> dict[str, int]:
        return {name: int(count) for name, count in self.query(ROW_COUNTS_SQL, db=db)}

    def size_bytes(self, db: str | None = None) -> int:
        return int(self.query(f"SELECT pg_database_size('{db or self.db}')")[0][0])

    def connections(self) -> tuple[int, int]:
        used, limit = self.query("SELECT count(*), current_setting('max_connections') FROM pg_stat_activity")[0]
        return int(used), int(limit)

    def create_database(self, name: str) -> None:
        _check_ident(name)
        self.query(f'CREATE DATABASE "{name}"', db="postgres")

    def drop_database(self, name: str) -> None:
        _check_ident(name)
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', db="postgres")

    @contextmanager
    def snapshot(self) -> Iterator[tuple[str, dict[str, int]]]:
        """An exported snapshot and the row counts seen in it; pg_dump --snapshot=… dumps
        exactly those rows, so the manifest's counts match the dump even under writes."""
        proc = subprocess.Popen(
            self.argv("psql", "-X", "-A", "-t", "-q", "-F", FIELD_SEP, "-v", "ON_ERROR_STOP=1"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(),
            text=True,
            bufsize=1,
        )
        assert proc.stdin is not None and proc.stdout is not None

        def read_until_end() -> list[str]:
            lines = []
            while True:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    err = proc.stderr.read() if proc.stderr else ""  # type: ignore[union-attr]
                    raise OpsError(f"psql on {self.describe()} ended early: {err.strip()[-300:]}")
                line = line.rstrip("\n")
                if line == "__ops_end__":
                    return lines
                lines.append(line)

        try:
            proc.stdin.write(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n"
                f"{ROW_COUNTS_SQL};\nSELECT '__ops_end__';\n"
            )
            proc.stdin.flush()
            lines = read_until_end()
            snapshot_id, rows = lines[0], lines[1:]
            counts = {name: int(count) for name, count in (r.split(FIELD_SEP) for r in rows)}
            yield snapshot_id, counts
        finally:
            try:
                proc.stdin.write("COMMIT;\n")
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def dump(self, path: Path, *, snapshot: str | None = None) -> None:
        """pg_dump custom format (compressed, restorable table by table) into `path`."""
        args = ["-Fc", "-Z", "6"] + ([f"--snapshot={snapshot}"] if snapshot else [])
        with path.open("wb") as out:
            run(self.argv("pg_dump", *args), stdout=out, env=self._env(), what=f"pg_dump of {self.describe()}")

    def restore(self, path: Path, *, db: str | None = None, clean: bool = True) -> None:
        """pg_restore of a custom-format dump in one transaction (all or nothing)."""
        args = ["--no-owner", "--no-acl", "--single-transaction", "--exit-on-error"]
        if clean:
            args += ["--clean", "--if-exists"]
        with path.open("rb") as inp:
            run(
                self.argv("pg_restore", *args, db=db),
                stdin=inp,
                env=self._env(),
                what=f"pg_restore into {db or self.db} on {self.describe()}",
            )


def _check_ident(name: str) -> None:
    if not name.replace("_", "").isalnum() or len(name) > 63:
        raise OpsError(f"refusing database name {name!r}")


# --- Redis ---------------------------------------------------------------------------------

# The stack's Redis keeps an admin login on its volume (infra/specs/redis.py); a Redis
# without one (older volumes, the test doubles) takes the container's REDIS_PASSWORD. Either
# goes to redis-cli in REDISCLI_AUTH, never as an argument (`ps` would show it).
REDIS_CLI_IN_CONTAINER = (
    f'if [ -r {ADMIN_PASSWORD_FILE} ]; then export REDISCLI_AUTH="$(cat {ADMIN_PASSWORD_FILE})"; '
    f'exec redis-cli --user {ADMIN_USER} --no-auth-warning "$@"; fi; '
    '[ -z "${REDIS_PASSWORD:-}" ] || export REDISCLI_AUTH="$REDIS_PASSWORD"; '
    'exec redis-cli --no-auth-warning "$@"'
)


class Redis:
    def __init__(self, place: Place, *, url: str | None = None) -> None:
        if isinstance(place, Local) and not url:
            raise OpsError("Redis on this machine needs REDIS_URL")
        self.place, self.url = place, url

    def describe(self) -> str:
        return _safe(self.url) if self.url else self.place.describe()

    def argv(self, *args: str) -> list[str]:
        if isinstance(self.place, Container):
            return self.place.argv(["sh", "-c", REDIS_CLI_IN_CONTAINER, "redis-cli", *args])
        assert self.url is not None
        parts = urlsplit(self.url)
        argv = ["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        if parts.scheme == "rediss":
            argv.append("--tls")
        if parts.username:
            argv += ["--user", unquote(parts.username)]
        db = parts.path.lstrip("/")
        if db:
            argv += ["-n", db]
        return [*argv, "--no-auth-warning", *args]

    def environ(self) -> dict[str, str] | None:
        """The password goes to redis-cli in REDISCLI_AUTH, never on the command line."""
        env = self.place.environ()
        if env is not None and self.url:
            password = urlsplit(self.url).password
            if password:
                env["REDISCLI_AUTH"] = unquote(password)
        return env

    def cmd(self, *args: str, timeout: float = 30) -> str:
        out = run(
            self.argv(*args), env=self.environ(), what=f"redis-cli {args[0]} on {self.describe()}", timeout=timeout
        ).decode()
        if out.startswith(("ERR", "NOAUTH", "WRONGPASS", "(error)")):
            raise OpsError(f"redis {args[0]} on {self.describe()}: {out.strip()}")
        return out

    def ping(self) -> bool:
        return self.cmd("PING", timeout=10).strip() == "PONG"

    def info(self, section: str) -> dict[str, str]:
        out = self.cmd("INFO", section)
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("#"))

    def keyspace(self) -> dict[int, int]:
        """Keys per database number, e.g. {0: 12}."""
        out = {}
        for name, value in self.info("keyspace").items():
            if name.startswith("db"):
                fields = dict(kv.split("=") for kv in value.strip().split(","))
                out[int(name[2:])] = int(fields["keys"])
        return out

    def memory(self) -> tuple[int, int]:
        info = self.info("memory")
        return int(info.get("used_memory", "0").strip()), int(info.get("maxmemory", "0").strip())

    def save_rdb(self, path: Path) -> None:
        """A point-in-time RDB snapshot over the replication protocol (`redis-cli --rdb`)."""
        if isinstance(self.place, Container):
            remote = f"/tmp/selextract-ops-{os.getpid()}-{time.time_ns()}.rdb"
            run(self.argv("--rdb", remote), what=f"redis snapshot on {self.describe()}")
            try:
                run(self.place.docker("cp", f"{self.place.name}:{remote}", str(path)), what="docker cp of the snapshot")
            finally:
                run(self.place.argv(["rm", "-f", remote]), what="cleanup of the snapshot")
        else:
            run(self.argv("--rdb", str(path)), env=self.environ(), what=f"redis snapshot of {self.describe()}")
        if path.read_bytes()[:5] != b"REDIS":
            raise OpsError(f"redis snapshot of {self.describe()} is not an RDB file")

    def restore_rdb(self, path: Path, *, flush: bool = True) -> int:
        """Replace the data with that of an RDB file: load it into a scratch redis-server
        here, then DUMP/RESTORE every live key into the target (`redis-cli --pipe`).
        Returns how many keys without a TTL were restored (those with one may expire)."""
        with scratch_redis(path) as scratch:
            payload, count = _restore_commands(scratch, flush=flush)
        out = run(
            self.argv("--pipe"), input=payload, env=self.environ(), what=f"redis restore into {self.describe()}"
        ).decode()
        errors = next((line for line in out.splitlines() if line.startswith("errors:")), "")
        if not errors.startswith("errors: 0,"):
            raise OpsError(f"redis restore into {self.describe()}: {out.strip()[-300:]}")
        return count


def _resp(*args: bytes | str | int) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _restore_commands(scratch: Any, *, flush: bool) -> tuple[bytes, int]:
    chunks = [_resp("FLUSHALL")] if flush else []
    count = 0
    import redis

    port = scratch.connection_pool.connection_kwargs["port"]
    for db in sorted(_keyspace_of(scratch)):
        client = redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=30)
        chunks.append(_resp("SELECT", db))
        for key in client.scan_iter(count=1000):
            dumped = client.dump(key)
            ttl = client.pttl(key)
            if dumped is None or ttl == -2:
                continue
            chunks.append(_resp("RESTORE", key, max(ttl, 0), dumped, "REPLACE"))
            count += ttl == -1
        client.close()
    chunks.append(_resp("SELECT", 0))
    return b"".join(chunks), count


def _keyspace_of(client: Any) -> list[int]:
    return [int(name[2:]) for name in client.info("keyspace") if name.startswith("db")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def scratch_redis(rdb: Path | None = None) -> Iterator[Any]:
    """A throwaway redis-server on 127.0.0.1 (optionally loaded from an RDB file)."""
    import redis

    server = shutil.which("redis-server")
    if not server:
        raise OpsError("redis-server is not installed on this machine (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="selextract-redis-") as tmp:
        if rdb is not None:
            shutil.copyfile(rdb, Path(tmp) / "dump.rdb")
        port = free_port()
        proc = subprocess.Popen(
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                tmp,
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                "64",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.ping() and client.info("persistence").get("loading") == 0:
                        break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if proc.poll() is not None:
                    raise OpsError(f"scratch redis-server exited ({proc.returncode}): is {rdb} a readable RDB file?")
                if time.monotonic() > deadline:
                    raise OpsError("scratch redis-server did not start within 30s")
                time.sleep(0.1)
            yield client
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- result storage (through ops/results_agent.py) ---------------------------------------------


class Results:
    """Result objects wherever the app keeps them (local dir or S3 bucket), through the
    agent script run with the app's own settings: in the API container (docker) or here."""

    def __init__(
        self, place: Place, *, backend: str = "local", login: Callable[[], tuple[str, str]] | None = None
    ) -> None:
        """`login`: another S3 key than the app's (the backup key), as (access key, secret),
        asked for when first needed; it reaches the agent through the environment only."""
        self.place, self.backend, self.login = place, backend, login

    def describe(self) -> str:
        return f"{self.backend} storage via {self.place.describe()}"

    def _login_env(self) -> dict[str, str]:
        if self.login is None:
            return {}
        access, secret = self.login()
        return {"S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}

    def argv(self, *args: str) -> list[str]:
        source = AGENT_FILE.read_text()
        if isinstance(self.place, Container):
            names = ("S3_ACCESS_KEY", "S3_SECRET_KEY") if self.login else ()
            return self.place.argv(["python3", "-c", source, *args], env_names=names)
        return self.place.argv([sys.executable, "-c", source, *args])

    def environ(self) -> dict[str, str] | None:
        login = self._login_env()
        base = self.place.environ()
        if not login:
            return base
        return {**(os.environ if base is None else base), **login}

    def call(
        self,
        *args: str,
        input: bytes | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float = 3600,
    ) -> bytes:
        return run(
            self.argv(*args),
            input=input,
            stdin=stdin,
            stdout=stdout,
            env=self.environ(),
            what=f"storage {args[0]} ({self.describe()})",
            timeout=timeout,
        )

    def json(self, *args: str, timeout: float = 600) -> Any:
        return json.loads(self.call(*args, timeout=timeout) or b"null")

    def check(self) -> dict[str, Any]:
        return self.json("check", timeout=60)

    def stats(self) -> dict[str, Any]:
        return self.json("stats")

    def export_to(self, path: Path) -> None:
        with path.open("wb") as out:
            self.call("export", stdout=out)

    def import_from(self, path: Path, *, clear: bool = False) -> dict[str, Any]:
        with path.open("rb") as inp:
            out = self.call("import", *(["--clear"] if clear else []), stdin=inp)
        return json.loads(out)

    def put_object(self, bucket: str, key: str, path: Path) -> None:
        with path.open("rb") as inp:
            self.call("put", bucket, key, stdin=inp)

    def get_object(self, bucket: str, key: str, path: Path) -> None:
        with path.open("wb") as out:
            self.call("get", bucket, key, stdout=out)

    def put_tree(self, bucket: str, prefix: str, directory: Path, files: list[str]) -> None:
        """Upload `files` (relative to `directory`) as PREFIX<file>, in one call."""
        with tempfile.TemporaryFile() as tmp:
            with tarfile.open(fileobj=tmp, mode="w") as tar:
                for name in files:
                    tar.add(str(directory / name), arcname=name, recursive=False)
            tmp.seek(0)
            self.call("put-tar", bucket, prefix, stdin=tmp)

    def get_tree(self, bucket: str, prefix: str, directory: Path) -> list[str]:
        """Download every object under PREFIX into `directory`, in one call."""
        with tempfile.TemporaryFile() as tmp:
            self.call("get-tar", bucket, prefix, stdout=tmp)
            tmp.seek(0)
            names = []
            with tarfile.open(fileobj=tmp, mode="r:") as tar:
                for member in tar:
                    if member.isfile() and not member.name.startswith("/") and ".." not in Path(member.name).parts:
                        # the "data" filter where this Python has it (3.11.4+); names are checked above
                        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                        tar.extract(member, directory, **safe)
                        names.append(member.name)
            return names

    def list_objects(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        return self.json("list", bucket, prefix)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        return int(self.json("delete-prefix", bucket, prefix)["deleted"])

    def ensure_buckets(self, *buckets: str) -> None:
        self.call("ensure-buckets", *buckets, timeout=120)


# --- workers -------------------------------------------------------------------------------

# Connect first with one short try (an unreachable broker fails in seconds instead of
# after kombu's retries), then broadcast; `limit` returns as soon as all have answered.
CELERY_PING = """
import json, sys
from common.queue import get_celery
app = get_celery()
try:
    app.connection_for_write().ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout={timeout})
    replies = app.control.ping(timeout={timeout}, limit={limit})
except Exception as exc:
    sys.exit(f"broker unreachable: {{type(exc).__name__}}: {{exc}}")
print(json.dumps(replies))
"""


class Workers:
    """Celery workers answering a broadcast ping (`celery inspect ping`)."""

    def __init__(self, place: Place, *, expected: int | None = None) -> None:
        self.place, self.expected = place, expected

    def ping(self, timeout: float = 3.0) -> list[str]:
        code = CELERY_PING.format(timeout=timeout, limit=self.expected or None)
        if isinstance(self.place, Container):
            out = run(self.place.argv(["python3", "-c", code]), what="celery ping", timeout=timeout + 60)
        else:
            out = run([sys.executable, "-c", code], env=self.place.environ(), what="celery ping", timeout=timeout + 60)
        replies = json.loads(out.decode().strip().splitlines()[-1] or "[]")
        return sorted(name for reply in replies for name in reply)


# --- the whole deployment ------------------------------------------------------------------


@dataclass
class Target:
    """Everything of one deployment the ops commands touch."""

    mode: Literal["docker", "url"]
    stack: str
    postgres: Postgres
    redis: Redis
    results: Results
    workers: Workers
    backups: Results  # the `backups` bucket, with the backup key (ops only; the app's key cannot)
    api_url: str | None
    storage_backend: str
    object_storage: bool  # a `backups` bucket can be used
    data_containers: dict[str, Container] = field(default_factory=dict)  # role → container (disk checks)
    api_container: Container | None = None
    plan: Plan | None = None
    local_paths: list[str] = field(default_factory=list)  # directories on this machine (disk check)

    def describe(self) -> str:
        return f"{self.stack} ({self.mode}: postgres {self.postgres.describe()}, redis {self.redis.describe()})"


SERVICE_ENV_KEYS = (
    "DATABASE_URL",
    "REDIS_URL",
    "STORAGE_BACKEND",
    "STORAGE_PATH",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_BUCKET",
    "S3_REGION",
    "API_URL",
)


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise OpsError(f"cannot read env file {path}: {exc.strerror}") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        out[key.strip()] = value.strip().strip("'\"")
    return out


def url_target(env: Mapping[str, str], *, stack: str = "services") -> Target:
    """A deployment reached by its connection strings (the service's own env vars)."""
    if not env.get("DATABASE_URL") or not env.get("REDIS_URL"):
        raise OpsError("DATABASE_URL and REDIS_URL are needed (environment or --env-file)")
    backend = env.get("STORAGE_BACKEND") or (
        "s3" if env.get("S3_ENDPOINT_URL") and not env.get("STORAGE_PATH") else "local"
    )
    service_env = {k: v for k, v in env.items() if k in SERVICE_ENV_KEYS or k.startswith(("CELERY_", "S3_"))}
    service_env["STORAGE_BACKEND"] = backend
    place = Local(service_env)
    # the backup key if given (S3_BACKUP_ACCESS_KEY/S3_BACKUP_SECRET_KEY), else the app's own
    backup_key = (env.get("S3_BACKUP_ACCESS_KEY") or "", env.get("S3_BACKUP_SECRET_KEY") or "")

    def backup_login() -> tuple[str, str]:
        return backup_key

    return Target(
        mode="url",
        stack=stack,
        postgres=Postgres(place, url=env["DATABASE_URL"]),
        redis=Redis(place, url=env["REDIS_URL"]),
        results=Results(place, backend=backend),
        workers=Workers(place),
        backups=Results(place, backend=backend, login=backup_login if all(backup_key) else None),
        api_url=env.get("API_URL"),
        storage_backend=backend,
        object_storage=bool(env.get("S3_ENDPOINT_URL")),
        local_paths=[p for p in (env.get("STORAGE_PATH"),) if p and backend == "local" and Path(p).is_dir()],
    )


def api_url_for(settings: Settings, entry_address: str | None = None) -> str:
    if settings.target == "local":
        if settings.tls.mode == "off":
            return f"http://127.0.0.1:{settings.local.http_port}"
        return f"https://127.0.0.1:{settings.local.https_port}"
    if settings.dns.enabled:
        return f"https://api.{settings.domain}"
    return f"https://{entry_address}" if entry_address else f"https://api.{settings.domain}"


def stack_containers(stack: str, role: Role | str, docker_host: str | None = None) -> list[tuple[str, bool]]:
    """(name, running) of the stack's containers of `role` on one engine, newest first."""
    role_name = role.value if isinstance(role, Role) else role
    argv = [
        "docker",
        *(["-H", docker_host] if docker_host else []),
        "ps",
        "-a",
        "--filter",
        f"label=selextract.stack={stack}",
        "--filter",
        f"label=selextract.role={role_name}",
        "--format",
        "{{.Names}}\t{{.State}}\t{{.CreatedAt}}",
    ]
    out = run(argv, what="docker ps", timeout=60).decode()
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    rows.sort(key=lambda r: r[2], reverse=True)
    return [(r[0], r[1] == "running") for r in rows]


def find_container(slot: str, stack: str, role: Role, docker_host: str | None = None) -> Container:
    """The container in a plan slot: API and worker containers carry their image version
    (`{slot}-{version}`, old and new side by side during a deploy), so the running one is
    looked up by its labels; data services are named exactly `{slot}`."""
    try:
        found = [
            (n, up)
            for n, up in stack_containers(stack, role, docker_host)
            if n == slot or (n.startswith(slot + "-") and not n.endswith("-proxy-1"))
        ]
    except OpsError:
        found = []
    running = [n for n, up in found if up]
    name = running[0] if running else found[0][0] if found else slot
    return Container(name, docker_host)


def docker_target(
    plan: Plan,
    settings: Settings,
    *,
    docker_hosts: Mapping[str, str | None] | None = None,
    entry_address: str | None = None,
    backup_secret: Callable[[], str] | None = None,
) -> Target:
    """A deployment reached with `docker exec`, containers named from the plan.
    `backup_secret` gives the backup key's secret (the stack's secret output) when the
    `backups` bucket is first used: the API container, where the commands run, has only
    the app's key, which cannot reach that bucket."""
    hosts = docker_hosts or {}

    def backup_login() -> tuple[str, str]:
        if backup_secret is None:
            raise OpsError(f"the backup key ({BACKUP_KEY_SECRET}) of stack {plan.stack} is not known here")
        return backup_access_key(settings.object_store.access_key), backup_secret()

    def container(role: Role) -> Container:
        placements = plan.placements_of(role)
        if not placements:
            raise OpsError(f"phase {plan.phase} of {plan.stack} has no {role.value} container")
        host = placements[0].host
        return find_container(plan.container_name(host, role, 1), plan.stack, role, hosts.get(host))

    api = container(Role.API)
    data = {"postgres": container(Role.POSTGRES), "redis": container(Role.REDIS)}
    if plan.placements_of(Role.OBJECT_STORE):
        data["objectstore"] = container(Role.OBJECT_STORE)
    return Target(
        mode="docker",
        stack=plan.stack,
        postgres=Postgres(data["postgres"]),
        redis=Redis(data["redis"]),
        results=Results(api, backend=plan.storage_backend),
        workers=Workers(api, expected=plan.worker_containers),
        backups=Results(api, backend=plan.storage_backend, login=backup_login),
        api_url=api_url_for(settings, entry_address),
        storage_backend=plan.storage_backend,
        object_storage="backups" in plan.buckets,
        data_containers=data,
        api_container=api,
        plan=plan,
    )
