#!/usr/bin/env bash
# Real backing services for the app/worker tests, on 127.0.0.1 with fixed ports:
#   PostgreSQL 15 (Debian) :55432, Redis (Debian) :56379, SeaweedFS S3 :58333,
#   the local test website (images/testsite, when present) :58099; and Debian's chromium
#   + chromedriver for the console's browser test.
# Usage: scripts/services.sh start|stop|status|env
# Idempotent: `start` leaves running services alone. Data lives under
# ${SELEXTRACT_SERVICES_DIR:-/tmp/selextract-services}; the variables a test needs are
# written to $SELEXTRACT_SERVICES_DIR/env (sourced by tests/service).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${SELEXTRACT_SERVICES_DIR:-/tmp/selextract-services}
CACHE=${SELEXTRACT_CACHE:-$HOME/.cache/selextract}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WEED=${WEED_BIN:-$CACHE/bin/weed}

PG_PORT=55432
REDIS_PORT=56379
REDIS_PASSWORD=selextract-redis
S3_PORT=58333
WEED_MASTER_PORT=59333
WEED_VOLUME_PORT=58380
WEED_FILER_PORT=58888
S3_ACCESS_KEY=selextract
S3_SECRET_KEY=selextract-s3-secret
TESTSITE_PORT=58099
DB_USER=selextract
DB_PASSWORD=selextract
DB_NAME=selextract

say() { printf '[services] %s\n' "$*"; }

# wait_for NAME SECONDS CMD... : poll CMD until it succeeds.
wait_for() {
  local name=$1 seconds=$2
  shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  say "$name did not answer within ${seconds}s" >&2
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE: SIGTERM, wait up to 20 s for a graceful exit (ports freed), then SIGKILL.
stop_pid() {
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 80); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

# --- PostgreSQL -----------------------------------------------------------------------
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

start_postgres() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    say "installing postgresql from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local data=$DIR/postgres/data run=$DIR/postgres/run
  if pg_ready; then say "postgres   already running on 127.0.0.1:$PG_PORT"; return; fi
  mkdir -p "$DIR/postgres" "$run"
  chmod 755 "$DIR"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$DIR/postgres"
  if [ ! -s "$data/PG_VERSION" ]; then
    local pwfile=$DIR/postgres/pw
    echo postgres >"$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" \
      -E UTF8 --locale=C.UTF-8 >"$DIR/postgres/initdb.log" 2>&1
    rm -f "$pwfile"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$run'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$DIR/postgres/postgres.log" -w -t 60 start >/dev/null
  wait_for postgres 30 pg_ready
  PGPASSWORD=postgres "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<EOF
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
EOF
  say "postgres   up on 127.0.0.1:$PG_PORT (db $DB_NAME, user $DB_USER)"
}

stop_postgres() {
  if [ -s "$DIR/postgres/data/PG_VERSION" ] && pg_ready; then
    as_postgres "$PG_BIN/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null
    say "postgres   stopped"
  fi
}

# --- Redis ----------------------------------------------------------------------------
redis_ready() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASSWORD" --no-auth-warning ping 2>/dev/null | grep -q PONG; }

start_redis() {
  if ! command -v redis-server >/dev/null; then
    say "installing redis-server from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if redis_ready; then say "redis      already running on 127.0.0.1:$REDIS_PORT"; return; fi
  mkdir -p "$DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --requirepass "$REDIS_PASSWORD" \
    --daemonize yes --dir "$DIR/redis" --pidfile "$DIR/redis/redis.pid" \
    --logfile "$DIR/redis/redis.log" --save "" --appendonly no --databases 64
  wait_for redis 20 redis_ready
  say "redis      up on 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
  if redis_ready; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASSWORD" --no-auth-warning shutdown nosave >/dev/null 2>&1 || true
    say "redis      stopped"
  fi
}

# --- SeaweedFS (S3) -------------------------------------------------------------------
s3_ready() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" ; }

start_s3() {
  if port_open "$S3_PORT" && s3_ready; then say "s3         already running on 127.0.0.1:$S3_PORT"; return; fi
  if [ ! -x "$WEED" ] && [ -x "$ROOT/scripts/setup-seaweedfs.sh" ]; then
    say "building SeaweedFS with scripts/setup-seaweedfs.sh"
    "$ROOT/scripts/setup-seaweedfs.sh"
  fi
  if [ ! -x "$WEED" ]; then
    say "s3         NOT started: no SeaweedFS binary at $WEED (scripts/setup-seaweedfs.sh builds it)" >&2
    return 1
  fi
  mkdir -p "$DIR/seaweedfs/data"
  cat >"$DIR/seaweedfs/s3.json" <<EOF
{"identities": [{"name": "selextract",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  # Every bucket is a collection with its own volumes: grow one at a time (not 7) and allow
  # many (volumes are sparse files; the size limit only caps how big each may get).
  WEED_MASTER_VOLUME_GROWTH_COPY_1=1 \
  nohup "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DIR/seaweedfs/data" \
    -master.port="$WEED_MASTER_PORT" -master.port.grpc=$((WEED_MASTER_PORT + 1)) \
    -volume.port="$WEED_VOLUME_PORT" -volume.port.grpc=$((WEED_VOLUME_PORT + 1)) \
    -filer.port="$WEED_FILER_PORT" -filer.port.grpc=$((WEED_FILER_PORT + 1)) \
    -master.volumeSizeLimitMB=32 -volume.max=1000 \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 1)) -s3.config="$DIR/seaweedfs/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    >"$DIR/seaweedfs/weed.log" 2>&1 &
  echo $! >"$DIR/seaweedfs/weed.pid"
  wait_for s3 60 s3_ready || { tail -20 "$DIR/seaweedfs/weed.log" >&2; return 1; }
  say "s3         up on 127.0.0.1:$S3_PORT (SeaweedFS, key $S3_ACCESS_KEY)"
}

stop_s3() {
  if pid_alive "$DIR/seaweedfs/weed.pid"; then
    stop_pid "$DIR/seaweedfs/weed.pid"
    say "s3         stopped"
  fi
}

# --- local test website ---------------------------------------------------------------
testsite_ready() { curl -sf -o /dev/null "http://127.0.0.1:$TESTSITE_PORT/robots.txt"; }

start_testsite() {
  local server=$ROOT/images/testsite/server.py
  if testsite_ready; then say "testsite   already running on 127.0.0.1:$TESTSITE_PORT"; return; fi
  if [ ! -f "$server" ]; then
    say "testsite   skipped: $server not present (tests use their own site fixture)"
    return 0
  fi
  mkdir -p "$DIR/testsite"
  nohup python3 "$server" --port "$TESTSITE_PORT" --root "$ROOT/images/testsite/site" \
    >"$DIR/testsite/testsite.log" 2>&1 &
  echo $! >"$DIR/testsite/testsite.pid"
  wait_for testsite 20 testsite_ready
  say "testsite   up on 127.0.0.1:$TESTSITE_PORT"
}

stop_testsite() {
  if pid_alive "$DIR/testsite/testsite.pid"; then
    stop_pid "$DIR/testsite/testsite.pid"
    say "testsite   stopped"
  fi
}

# --- headless browser for the console test -----------------------------------------------
ensure_chromium() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then return 0; fi
  if [ "$(id -u)" != 0 ]; then say "chromium   missing (apt-get install chromium chromium-driver as root)"; return 0; fi
  say "installing chromium and chromium-driver from Debian (console browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

write_env() {
  local env=$DIR/env
  {
    echo "DATABASE_URL=postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
    echo "REDIS_URL=redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
    if port_open "$S3_PORT"; then
      echo "S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
      echo "S3_ACCESS_KEY=$S3_ACCESS_KEY"
      echo "S3_SECRET_KEY=$S3_SECRET_KEY"
      echo "S3_REGION=us-east-1"
      echo "S3_BUCKET=task-results"
    fi
    if testsite_ready; then echo "TESTSITE_URL=http://127.0.0.1:$TESTSITE_PORT"; fi
    if command -v chromedriver >/dev/null; then
      echo "CHROMIUM_BIN=$(command -v chromium)"
      echo "CHROMEDRIVER_BIN=$(command -v chromedriver)"
    fi
  } >"$env.tmp"
  mv "$env.tmp" "$env"
  say "env        written to $env"
}

status() {
  local rc=0
  if pg_ready; then say "postgres   up (127.0.0.1:$PG_PORT)"; else say "postgres   down"; rc=1; fi
  if redis_ready; then say "redis      up (127.0.0.1:$REDIS_PORT)"; else say "redis      down"; rc=1; fi
  if port_open "$S3_PORT"; then say "s3         up (127.0.0.1:$S3_PORT)"; else say "s3         down"; rc=1; fi
  if testsite_ready; then say "testsite   up (127.0.0.1:$TESTSITE_PORT)"; else say "testsite   down"; fi
  return $rc
}

case ${1:-} in
  start)
    mkdir -p "$DIR"
    rc=0
    start_postgres
    start_redis
    start_s3 || rc=1
    start_testsite || rc=1
    ensure_chromium || rc=1
    write_env
    exit $rc
    ;;
  stop)
    stop_testsite
    stop_s3
    stop_redis
    stop_postgres
    rm -f "$DIR/env"
    ;;
  status) status ;;
  env) cat "$DIR/env" ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
