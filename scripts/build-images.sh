#!/usr/bin/env bash
# Build the local selextract/* images from Debian packages: no image registry
# is needed (the base image is made with debootstrap + docker import).
# Idempotent and cached: an image is skipped when its tag exists and its
# selextract.context-hash label matches the hash of its Dockerfile + context
# (+ the ID of the base image it is built FROM). Freshly built images are
# verified by running them briefly. See images/README.md.
#
# Usage: scripts/build-images.sh [options] [IMAGE...]      (default: all images)
#   --force           rebuild the selected images even if up to date (no layer cache)
#   --refresh-rootfs  also re-run debootstrap for the base (new Debian updates)
#   --verify          verify all selected images, also those already up to date
#   --no-verify       do not verify freshly built images
#   --jobs N          build up to N images at once (default 3)
#   IMAGE             base python postgres redis haproxy nginx prometheus
#                     alertmanager node-exporter postgres-exporter redis-exporter
#                     testsite seaweedfs certbot registry machine
# Environment: SELEXTRACT_CACHE (default ~/.cache/selextract), DEBIAN_MIRROR.
# Build logs: $SELEXTRACT_CACHE/images/logs/<image>.log
set -euo pipefail

export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH   # docker.io's client (BuildKit) first
export DOCKER_BUILDKIT=1
T0=$SECONDS

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMG=$REPO/images
CACHE=${SELEXTRACT_CACHE:-$HOME/.cache/selextract}
WORK=$CACHE/images
LOGS=$WORK/logs
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WEED=$CACHE/bin/weed
WEED_MODULE=github.com/seaweedfs/seaweedfs/weed@v0.0.0-20261109003541-7506e5f91cd6
SOURCE_LABEL=org.opencontainers.image.source=selextract
HASH_LABEL=selextract.context-hash

ALL=(base python postgres redis haproxy nginx prometheus alertmanager
     node-exporter postgres-exporter redis-exporter testsite seaweedfs certbot registry machine)
declare -A TAG=(
  [base]=bookworm [python]=3.11 [postgres]=15 [redis]=7 [haproxy]=2.6 [nginx]=1.22
  [prometheus]=2 [alertmanager]=0.25 [node-exporter]=1 [postgres-exporter]=0
  [redis-exporter]=1 [testsite]=1 [seaweedfs]=3 [certbot]=2 [registry]=2
  [machine]=bookworm
)
# Debian packages each image needs; an image is skipped if Debian lacks one.
declare -A DEBS=(
  [python]="python3 python3-venv" [postgres]=postgresql-15 [redis]=redis-server
  [haproxy]=haproxy [nginx]=nginx [prometheus]=prometheus
  [alertmanager]=prometheus-alertmanager [node-exporter]=prometheus-node-exporter
  [postgres-exporter]=prometheus-postgres-exporter
  [redis-exporter]=prometheus-redis-exporter [testsite]=python3 [certbot]=certbot
  [registry]="docker-registry wget"
  [machine]="systemd systemd-sysv openssh-server docker.io cloud-init ufw fail2ban"
)

log() { echo "[images] $*"; }
die() { echo "[images] ERROR: $*" >&2; exit 1; }
ref() { echo "selextract/$1:${TAG[$1]}"; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

FORCE=0 NO_CACHE="" REFRESH=0 VERIFY=new JOBS=3
SELECTED=()
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --jobs) JOBS=${1:-}; shift || true; [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a number" ;;
    --jobs=*) JOBS=${a#*=}; [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a number" ;;
    --force) FORCE=1 NO_CACHE=1 ;;
    --refresh-rootfs) REFRESH=1 ;;
    --verify) VERIFY=all ;;
    --no-verify) VERIFY=none ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $a (see --help)" ;;
    *) [ -n "${TAG[$a]:-}" ] || die "unknown image '$a' (one of: ${ALL[*]})"; SELECTED+=("$a") ;;
  esac
done
[ ${#SELECTED[@]} -gt 0 ] || SELECTED=("${ALL[@]}")
is_selected() { local s; for s in "${SELECTED[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

docker info >/dev/null 2>&1 || die "no Docker engine (run scripts/setup-docker.sh first)"
mkdir -p "$WORK" "$LOGS"

# --- cleanup of scratch dirs and verification containers -------------------
SCRATCH=() NETWORK="" RUN_ID=$$
cleanup() {
  local d pids
  pids=$(jobs -p)
  # shellcheck disable=SC2086  # one pid per word
  if [ -n "$pids" ]; then kill $pids 2>/dev/null || true; fi   # our own unfinished builds
  rm_verify_containers
  for d in ${SCRATCH[@]+"${SCRATCH[@]}"}; do
    # debootstrap mounts proc/sys/dev in the target: never rm across mounts.
    awk -v r="$d/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$d"
  done
  if [ -n "$NETWORK" ]; then docker network rm "$NETWORK" >/dev/null 2>&1 || true; fi
}
rm_verify_containers() {
  docker ps -aq --filter label=selextract.verify="$RUN_ID" | xargs -r docker rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- context hashing ----------------------------------------------------------
# Lines "SRC<TAB>DEST": every file of the image's build context. Most contexts
# are just images/<name>/; some get files from elsewhere, staged at build time.
context_files() {
  local name=$1 f
  (cd "$IMG/$name" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | sed 's|^\./||') |
    while IFS= read -r f; do printf '%s\t%s\n' "$IMG/$name/$f" "$f"; done
  case "$name" in
    python)
      printf '%s\t%s\n' "$REPO/requirements/service.txt" service.txt
      printf '%s\t%s\n' /etc/ssl/certs/ca-certificates.crt host-ca-certificates.crt ;;
    seaweedfs)
      printf '%s\t%s\n' "$WEED" weed ;;
  esac
}

# hash of (parent hash, each file's content + exec bit + context path)
context_hash() {
  local name=$1 parent=$2 src dest
  {
    echo "parent $parent"
    context_files "$name" | LC_ALL=C sort -t$'\t' -k2 | while IFS=$'\t' read -r src dest; do
      [ -r "$src" ] || die "missing build input $src"
      printf '%s %s %s\n' "$(sha256sum <"$src" | cut -c1-64)" "$([ -x "$src" ] && echo x || echo -)" "$dest"
    done
  } | sha256sum | cut -c1-16
}

image_hash() { docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true; }

# --- base image -----------------------------------------------------------------
build_base() {
  local hash=$1 tar=$WORK/rootfs-bookworm-minbase-$1.tar log=$LOGS/base.log root t
  : >"$log"
  if [ ! -s "$tar" ] || [ $REFRESH = 1 ]; then
    if ! command -v debootstrap >/dev/null; then
      log "installing debootstrap (apt)"
      if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >>"$log" 2>&1; then
        die "could not install debootstrap (see $log)"
      fi
    fi
    root=$(mktemp -d "$WORK/rootfs.XXXXXX"); SCRATCH+=("$root")
    t=$SECONDS
    log "debootstrap --variant=minbase bookworm (log: $log) ..."
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >>"$log" 2>&1 || { tail -20 "$log" >&2; die "debootstrap failed"; }
    sh "$IMG/base/rootfs-setup.sh" "$root" >>"$log" 2>&1 || { tail -20 "$log" >&2; die "rootfs setup failed"; }
    tar --numeric-owner -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    find "$WORK" -maxdepth 1 -name 'rootfs-bookworm-minbase-*.tar' ! -name "${tar##*/}" -delete
    log "rootfs ready in $((SECONDS - t)) s: $tar ($(du -h "$tar" | cut -f1))"
  fi
  docker import \
    --change "LABEL $SOURCE_LABEL" --change "LABEL $HASH_LABEL=$hash" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
    "$tar" "$(ref base)" >>"$log"
}

# --- service images -------------------------------------------------------------
# build_image NAME HASH: stage the context in a scratch dir and docker build it
# (run as a background job: reports and returns instead of exiting).
build_image() {
  local name=$1 hash=$2 log=$LOGS/$1.log ctx src dest old t=$SECONDS
  old=$(docker image inspect -f '{{.Id}}' "$(ref "$name")" 2>/dev/null || true)
  log "building $(ref "$name") ..."
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/selextract-ctx-$name.XXXXXX")
  context_files "$name" | while IFS=$'\t' read -r src dest; do
    mkdir -p "$ctx/$(dirname "$dest")" && cp -p "$src" "$ctx/$dest"
  done
  if ! docker build --progress=plain ${NO_CACHE:+--no-cache} --label "$SOURCE_LABEL" --label "$HASH_LABEL=$hash" \
         -t "$(ref "$name")" "$ctx" >"$log" 2>&1; then
    rm -rf "$ctx"
    tail -30 "$log" | sed "s|^|[images] $name: |" >&2
    log "ERROR: building $(ref "$name") failed after $((SECONDS - t)) s (full log: $log)"
    return 1
  fi
  rm -rf "$ctx"
  log "built $(ref "$name") in $((SECONDS - t)) s ($(docker image inspect -f '{{.Size}}' "$(ref "$name")" | awk '{printf "%d MB", $1/1e6}'))"
  # drop the now-untagged previous version, unless a container still uses it
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$(ref "$name")")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# Debian packages missing from bookworm, for the images about to be built.
missing_debs() {
  [ $# -gt 0 ] || return 0
  docker run --rm "$(ref base)" sh -c \
    'apt-get update -qq >/dev/null 2>&1 || { echo "?apt-get update failed"; exit; }
     for p; do apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || echo "$p"; done' sh "$@"
}

# The weed binary for selextract/seaweedfs, built from source once (5-10 min).
# scripts/setup-seaweedfs.sh does that (and knows the pinned version); the
# fallback below is the same build. `go install module@version` refuses
# seaweedfs (its go.mod has replace directives): build a writable copy.
ensure_weed() {
  local t=$SECONDS l=$LOGS/weed-go.log dir src
  command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
  if [ -x "$REPO/scripts/setup-seaweedfs.sh" ]; then
    [ -x "$WEED" ] || log "building the weed binary with scripts/setup-seaweedfs.sh (log: $l) ..."
    "$REPO/scripts/setup-seaweedfs.sh" >"$l" 2>&1 || { tail -20 "$l" >&2; return 1; }
    [ -x "$WEED" ]; return
  fi
  [ -x "$WEED" ] && return 0
  command -v go >/dev/null || return 1
  local -x GOTOOLCHAIN=local GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build
  log "building the weed binary from $WEED_MODULE (log: $l) ..."
  (
    dir=$(go mod download -json "${WEED_MODULE%/weed@*}@${WEED_MODULE#*@}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$dir" ] || { echo "go mod download failed"; exit 1; }
    src=$CACHE/src/seaweedfs-${WEED_MODULE#*@}
    if [ ! -f "$src/go.mod" ]; then
      mkdir -p "$src" && cp -r "$dir/." "$src/" && chmod -R u+w "$src" || exit 1
    fi
    mkdir -p "$(dirname "$WEED")" || exit 1
    cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WEED.tmp" ./weed &&
      mv "$WEED.tmp" "$WEED" && echo "${WEED_MODULE#*@}" >"$WEED.version"
  ) >"$l" 2>&1 || { tail -20 "$l" >&2; return 1; }
  log "weed built in $((SECONDS - t)) s"
}

BUILT=() SKIPPED=() FAILED=()
declare -A HASH REASON

# Base first: every other image builds FROM it.
HASH[base]=$(context_hash base "bookworm minbase $MIRROR")
if [ $FORCE = 1 ] && is_selected base || [ $REFRESH = 1 ] || [ "$(image_hash "$(ref base)")" != "${HASH[base]}" ]; then
  t=$SECONDS
  log "building $(ref base) ..."
  build_base "${HASH[base]}"
  log "built $(ref base) in $((SECONDS - t)) s"
  BUILT+=(base)
else
  log "$(ref base) is up to date"
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$(ref base)")

# Which images need a build?
TODO=()
for name in "${ALL[@]}"; do
  [ "$name" = base ] && continue
  is_selected "$name" || continue
  if [ "$name" = seaweedfs ] && ! ensure_weed; then
    SKIPPED+=(seaweedfs); REASON[seaweedfs]="no weed binary at $WEED and building it failed (no Go toolchain? see $LOGS/weed-go.log)"
    continue
  fi
  # parent: the base image's ID, so a re-imported base rebuilds everything
  HASH[$name]=$(context_hash "$name" "$BASE_ID")
  if [ $FORCE = 1 ] || [ "$(image_hash "$(ref "$name")")" != "${HASH[$name]}" ]; then
    TODO+=("$name")
  else
    log "$(ref "$name") is up to date"
  fi
done

# Skip, with the reason, images whose Debian packages do not exist.
want=()
# shellcheck disable=SC2206  # DEBS values are space-separated package lists
for name in ${TODO[@]+"${TODO[@]}"}; do want+=(${DEBS[$name]:-}); done
if [ ${#want[@]} -gt 0 ]; then
  missing=$(missing_debs "${want[@]}")
  case "$missing" in "?"*) die "apt-get update failed inside $(ref base)" ;; esac
  keep=()
  for name in "${TODO[@]}"; do
    gone=""
    for p in ${DEBS[$name]:-}; do grep -qx "$p" <<<"$missing" && gone="$gone $p"; done
    if [ -n "$gone" ]; then
      SKIPPED+=("$name"); REASON[$name]="Debian bookworm has no package(s):$gone"
      log "skipping $(ref "$name"): ${REASON[$name]}"
    else
      keep+=("$name")
    fi
  done
  TODO=(${keep[@]+"${keep[@]}"})
fi

# Build, up to $JOBS at a time (apt downloads and unpacking overlap well).
if [ ${#TODO[@]} -gt 0 ]; then
  log "building ${#TODO[@]} image(s), $JOBS at a time: ${TODO[*]}"
  for name in "${TODO[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    build_image "$name" "${HASH[$name]}" &
  done
  wait
fi
BUILD_FAILED=()
for name in ${TODO[@]+"${TODO[@]}"}; do
  if [ "$(image_hash "$(ref "$name")")" = "${HASH[$name]}" ]; then BUILT+=("$name"); else BUILD_FAILED+=("$name"); fi
done

# --- verification -----------------------------------------------------------------
# Each verify_<name> runs the image briefly (ports published on 127.0.0.1,
# random host ports) and checks that the service works; containers are removed.
VENV_PY=$REPO/.venv/bin/python

# start NAME [docker run args...]: start a detached verification container
start() {
  local c=sxv-$RUN_ID-$1; shift
  docker run -d --name "$c" --label selextract.verify="$RUN_ID" --network "$NETWORK" "$@" >/dev/null
  echo "$c"
}
hostport() { docker port "$1" "$2" | head -1; }                 # -> 127.0.0.1:NNNNN
# wait_for SECONDS CMD...: retry CMD until it succeeds (last try shows its output)
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then "$@"; return; fi
    sleep 0.5
  done
}
VFAIL=0
check() { # check DESCRIPTION CMD...: run CMD quietly, show its output only if it fails
  local what=$1 out; shift
  if out=$("$@" 2>&1); then
    echo "    ok: $what"
  else
    echo "    FAILED: $what" >&2
    [ -z "$out" ] || tail -15 <<<"$out" | sed 's/^/      | /' >&2
    VFAIL=1; return 1
  fi
}
contains() { grep -q -- "$2" <<<"$1"; }
http_get() { curl -fsS --max-time 10 "$@"; }
mkscratch() { local d; d=$(mktemp -d "$VDIR/XXXXXX"); chmod 755 "$d"; echo "$d"; }
proc_user() { docker exec "$1" stat -c %U /proc/1; }

start_postgres() { # start_postgres NAME [extra docker args] -> container
  local n=$1; shift
  start "$n" -e POSTGRES_USER=sx -e POSTGRES_PASSWORD=sx-verify-pw -e POSTGRES_DB=sxdb "$@" \
    "$(ref postgres)" postgres -c max_connections=200 -c shared_buffers=64MB
}
start_redis() {
  local n=$1; shift
  start "$n" "$@" "$(ref redis)" redis-server --requirepass sx-verify-pw --appendonly yes \
    --maxmemory 64mb --maxmemory-policy allkeys-lru
}

verify_python() {
  local out
  out=$(docker run --rm "$(ref python)" sh -c 'command -v python; python --version; curl --version | head -1;
        python -c "import fastapi, celery, sqlalchemy, psycopg, lxml, boto3, redis, httpx, parsel; print(\"imports-ok\")";
        id app; pwd; curl -fsS -o /dev/null https://pypi.org/simple/pip/ && echo tls-ok;
        pip download -q --no-deps -d /tmp/dl six==1.17.0 && echo pip-ok')
  check "python from /opt/venv ($(grep -m1 Python <<<"$out"))" contains "$out" "^/opt/venv/bin/python$"
  check "service requirements importable" contains "$out" imports-ok
  check "user app uid 10001, WORKDIR /srv" contains "$out" "uid=10001(app)"
  check "curl + CA bundle reach https://pypi.org" contains "$out" tls-ok
  check "pip can download from PyPI (for derived app/worker builds)" contains "$out" pip-ok
}

verify_postgres() {
  local d c out hp
  d=$(mkscratch)
  echo "CREATE TABLE verify_t (x int); INSERT INTO verify_t VALUES (42);" >"$d/01-table.sql"
  echo 'echo "init script ran" >&2' >"$d/02-hello.sh"
  chmod 644 "$d"/*
  c=$(start_postgres pg -p 127.0.0.1::5432 -v "$d:/docker-entrypoint-initdb.d:ro")
  check "pg_isready over TCP" wait_for 60 docker exec "$c" pg_isready -h 127.0.0.1 -U sx -d sxdb
  out=$(docker exec -e PGPASSWORD=sx-verify-pw "$c" psql -h 127.0.0.1 -U sx -d sxdb -tAc \
        "select current_setting('max_connections'), current_setting('shared_buffers'), (select x from verify_t), current_user")
  check "psql with password: -c args + initdb.d script applied ($out)" [ "$out" = "200|64MB|42|sx" ]
  check "wrong password rejected (scram-sha-256)" \
    bash -c "! docker exec -e PGPASSWORD=wrong $c psql -h 127.0.0.1 -U sx -d sxdb -tAc 'select 1' 2>/dev/null"
  check "postgres runs as user postgres" [ "$(proc_user "$c")" = postgres ]
  check "pg_dump present" docker exec "$c" pg_dump --version
  hp=$(hostport "$c" 5432)
  if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import psycopg' 2>/dev/null; then
    check "psycopg from the host via $hp" "$VENV_PY" -c "import psycopg; c=psycopg.connect('postgresql://sx:sx-verify-pw@$hp/sxdb'); assert c.execute('select 1').fetchone()==(1,)"
  else
    check "port published on $hp" bash -c "exec 3<>/dev/tcp/${hp%:*}/${hp#*:}"
  fi
}

verify_certbot() {
  local out
  out=$(docker run --rm "$(ref certbot)" --version 2>&1)
  check "certbot --version" contains "$out" "^certbot 2"
  check "/bin/sh for the renewal loop" docker run --rm --entrypoint /bin/sh "$(ref certbot)" -c "command -v cmp"
}

# the test bed's machine (scripts/machines.sh): boots systemd with sshd, cron and its own
# Docker engine; cloud-init off without a NoCloud seed. tests/machines does the rest.
verify_machine() {
  local c MACHINE_ARGS
  . "$IMG/machine/run-args.sh" && machine_run_args
  c=$(start machine "${MACHINE_ARGS[@]}" --tmpfs /var/lib/docker "$(ref machine)")
  check "systemd boots with no failed unit" wait_for 120 docker exec "$c" systemctl is-system-running --wait
  check "ssh, cron, docker active" docker exec "$c" systemctl is-active ssh cron docker
  check "inner Docker engine (overlay2)" bash -c "docker exec $c docker info -f '{{.Driver}}' | grep -qx overlay2"
  check "cloud-init disabled without a seed" bash -c "docker exec $c cloud-init status | grep -q disabled"
}

verify_redis() {
  local c hp out
  c=$(start_redis rd -p 127.0.0.1::6379)
  check "redis-cli -a PING" wait_for 20 bash -c "docker exec $c redis-cli -a sx-verify-pw --no-auth-warning PING | grep -q PONG"
  out=$(docker exec "$c" redis-cli -a sx-verify-pw --no-auth-warning CONFIG GET protected-mode)
  check "protected-mode off" contains "$out" "^no$"
  out=$(docker exec "$c" redis-cli -a sx-verify-pw --no-auth-warning CONFIG GET maxmemory-policy)
  check "args passed through (maxmemory-policy allkeys-lru)" contains "$out" allkeys-lru
  check "redis runs as user redis" [ "$(proc_user "$c")" = redis ]
  hp=$(hostport "$c" 6379)
  out=$(exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}"; printf 'AUTH sx-verify-pw\r\nPING\r\n' >&3; timeout 5 head -c 12 <&3)
  check "AUTH + PING from the host via $hp" contains "$out" PONG
}

verify_haproxy() {
  local d c hp out
  d=$(mkscratch)
  cat >"$d/haproxy.cfg" <<'EOF'
global
  log stdout format raw local0
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind :80
  http-request return status 200 content-type text/plain string "haproxy-ok"
EOF
  chmod 644 "$d/haproxy.cfg"
  check "haproxy -c" docker run --rm -v "$d/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" "$(ref haproxy)" \
    haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg
  c=$(start ha -p 127.0.0.1::80 -v "$d/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" "$(ref haproxy)")
  hp=$(hostport "$c" 80)
  check "serves on :80 as non-root ($hp)" wait_for 15 bash -c "curl -fsS http://$hp/ | grep -q haproxy-ok"
  check "haproxy runs as user haproxy" [ "$(proc_user "$c")" = haproxy ]
}

verify_nginx() {
  local d c hp out
  d=$(mkscratch)
  # shellcheck disable=SC2016  # nginx variables, not shell
  printf 'server {\n  listen 8081;\n  location / { return 200 "${SX_VERIFY} $uri\\n"; }\n}\n' >"$d/t.conf.template"
  chmod 644 "$d/t.conf.template"
  check "nginx -t" docker run --rm "$(ref nginx)" nginx -t
  check "openssl present" docker run --rm "$(ref nginx)" openssl version
  c=$(start ngx -p 127.0.0.1::80 -p 127.0.0.1::8081 -e SX_VERIFY=tmpl-ok -v "$d:/etc/nginx/templates:ro" "$(ref nginx)")
  hp=$(hostport "$c" 80)
  check "default page on $hp" wait_for 15 bash -c "curl -fsS http://$hp/ | grep -q 'Welcome to nginx'"
  out=$(http_get "http://$(hostport "$c" 8081)/x" || true)
  check "templates/*.template rendered with envsubst ($out)" [ "$out" = "tmpl-ok /x" ]
  check "access log on stdout" bash -c "docker logs $c 2>/dev/null | grep -q 'GET / HTTP'"
}

verify_prometheus() {
  local c hp
  check "promtool --version" docker run --rm --entrypoint promtool "$(ref prometheus)" --version
  check "promtool check config" docker run --rm --entrypoint promtool "$(ref prometheus)" check config /etc/prometheus/prometheus.yml
  c=$(start prom -p 127.0.0.1::9090 "$(ref prometheus)")
  hp=$(hostport "$c" 9090)
  check "/-/ready on $hp" wait_for 30 http_get "http://$hp/-/ready"
  check "lifecycle API (/-/reload)" http_get -X POST "http://$hp/-/reload"
  check "prometheus runs as nobody" [ "$(proc_user "$c")" = nobody ]
}

verify_alertmanager() {
  local c hp
  check "amtool --version" docker run --rm --entrypoint amtool "$(ref alertmanager)" --version
  check "amtool check-config" docker run --rm --entrypoint amtool "$(ref alertmanager)" check-config /etc/alertmanager/alertmanager.yml
  c=$(start am -p 127.0.0.1::9093 "$(ref alertmanager)")
  hp=$(hostport "$c" 9093)
  check "/-/ready on $hp" wait_for 30 http_get "http://$hp/-/ready"
}

verify_node-exporter() {
  local c hp
  c=$(start ne -p 127.0.0.1::9100 "$(ref node-exporter)")
  hp=$(hostport "$c" 9100)
  check "/metrics on $hp has node_cpu_seconds_total" wait_for 20 bash -c "curl -fsS http://$hp/metrics | grep -q '^node_cpu_seconds_total'"
}

verify_postgres-exporter() {
  local pg c hp
  docker image inspect "$(ref postgres)" >/dev/null 2>&1 || { echo "    skipped: needs $(ref postgres)"; return 0; }
  pg=$(start_postgres pgx --network-alias pgx)
  wait_for 60 docker exec "$pg" pg_isready -h 127.0.0.1 -U sx -d sxdb
  c=$(start pe -p 127.0.0.1::9187 -e DATA_SOURCE_NAME="postgresql://sx:sx-verify-pw@pgx:5432/sxdb?sslmode=disable" "$(ref postgres-exporter)")
  hp=$(hostport "$c" 9187)
  check "DATA_SOURCE_NAME honoured: pg_up 1 on $hp" wait_for 30 bash -c "curl -fsS http://$hp/metrics | grep -q '^pg_up 1'"
}

verify_redis-exporter() {
  local c hp
  docker image inspect "$(ref redis)" >/dev/null 2>&1 || { echo "    skipped: needs $(ref redis)"; return 0; }
  start_redis rdx --network-alias rdx >/dev/null
  c=$(start re -p 127.0.0.1::9121 -e REDIS_ADDR=redis://rdx:6379 -e REDIS_PASSWORD=sx-verify-pw "$(ref redis-exporter)")
  hp=$(hostport "$c" 9121)
  check "REDIS_ADDR/REDIS_PASSWORD honoured: redis_up 1 on $hp" wait_for 30 bash -c "curl -fsS http://$hp/metrics | grep -q '^redis_up 1'"
}

verify_testsite() {
  local c hp out t
  c=$(start ts -p 127.0.0.1::8080 "$(ref testsite)")
  hp=$(hostport "$c" 8080)
  check "/healthz on $hp" wait_for 15 http_get "http://$hp/healthz"
  out=$(http_get "http://$hp/products.html")
  check "products.html has 20 products" [ "$(grep -c 'class="product"' <<<"$out")" = 20 ]
  check "robots.txt disallows /private/" bash -c "curl -fsS http://$hp/robots.txt | grep -qx 'Disallow: /private/'"
  check "/status/500 -> 500" [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$hp/status/500")" = 500 ]
  check "/redirect?to= -> 302" [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$hp/redirect?to=/table.html")" = 302 ]
  t=$(curl -fsS -o /dev/null -w '%{time_total}' "http://$hp/slow?ms=1000")
  check "/slow?ms=1000 took ${t}s" awk -v t="$t" 'BEGIN { exit !(t >= 1.0 && t < 5) }'
  check "runs as non-root" [ "$(proc_user "$c")" != root ]
}

verify_seaweedfs() {
  local d c hp py=()
  d=$(mkscratch)
  write_s3_check >"$d/s3check.py"
  cat >"$d/s3.json" <<'EOF'
{"identities": [{"name": "verify",
  "credentials": [{"accessKey": "sx-verify-key", "secretKey": "sx-verify-secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  chmod 644 "$d/s3.json" "$d/s3check.py"
  c=$(start sw -p 127.0.0.1::8333 -v "$d/s3.json:/etc/seaweedfs/s3.json:ro" "$(ref seaweedfs)" \
      server -dir=/data -s3 -s3.config=/etc/seaweedfs/s3.json -ip.bind=0.0.0.0 -volume.max=4 -master.volumeSizeLimitMB=64)
  hp=$(hostport "$c" 8333)
  check "weed runs as non-root" [ "$(proc_user "$c")" != root ]
  if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import boto3' 2>/dev/null; then
    py=("$VENV_PY" "$d/s3check.py" "http://$hp")
  else  # no host venv: use boto3 from the python image, on the verification network
    py=(docker run --rm -v "$d:/v:ro" --network "$NETWORK" "$(ref python)" python /v/s3check.py "http://$c:8333")
  fi
  check "S3 (boto3 via $hp): create bucket, put, get, list; wrong secret refused" wait_for 60 "${py[@]}"
}

verify_registry() {
  local d c hp
  d=$(mkscratch)
  # login verify / sx-verify-pw (bcrypt, cost 10), as infra/specs/registry.py configures it
  echo 'verify:$2b$10$24IxL9XsfiXQBgPp.Nx2BOyV0ZlWkKSyTqDEmN9fh0PTFzcT2fYqq' >"$d/htpasswd"
  chmod 644 "$d/htpasswd"
  c=$(start reg -p 127.0.0.1::5000 -v "$d/htpasswd:/auth/htpasswd:ro" -e REGISTRY_AUTH=htpasswd \
      -e REGISTRY_AUTH_HTPASSWD_REALM=verify -e REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd "$(ref registry)")
  hp=$(hostport "$c" 5000)
  check "/ on $hp (the health check, wget inside)" wait_for 30 docker exec "$c" wget -q -O /dev/null http://127.0.0.1:5000/
  check "/v2/ without a login -> 401" [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$hp/v2/")" = 401 ]
  check "/v2/ with the login" http_get -u verify:sx-verify-pw "http://$hp/v2/"
  check "docker login, push and pull through $hp" registry_round_trip "$hp" "$d/docker"
  check "registry runs as non-root" [ "$(proc_user "$c")" != root ]
}

# push the base image to the registry at $1 and pull it back (the Docker CLI config in $2)
registry_round_trip() {
  local img=$1/verify/base:bookworm
  printf '%s' sx-verify-pw | docker --config "$2" login -u verify --password-stdin "$1" &&
    docker tag "$(ref base)" "$img" && docker --config "$2" push "$img" && docker image rm "$img" &&
    docker --config "$2" pull "$img" && docker image rm "$img"
}

write_s3_check() {
  cat <<'EOF'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="sx-verify-key", aws_secret_access_key="sx-verify-secret",
                  config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=10))
try:
    s3.create_bucket(Bucket="verify")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.put_object(Bucket="verify", Key="hello.txt", Body=b"hello selextract")
assert s3.get_object(Bucket="verify", Key="hello.txt")["Body"].read() == b"hello selextract"
assert [o["Key"] for o in s3.list_objects_v2(Bucket="verify")["Contents"]] == ["hello.txt"]
try:  # wrong secret must be refused
    boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="sx-verify-key",
                 aws_secret_access_key="wrong").list_objects_v2(Bucket="verify")
except Exception:
    pass
else:
    raise SystemExit("wrong secret accepted")
EOF
}

TO_VERIFY=()
case $VERIFY in
  new) TO_VERIFY=(${BUILT[@]+"${BUILT[@]}"}) ;;
  all) for n in "${SELECTED[@]}"; do docker image inspect "$(ref "$n")" >/dev/null 2>&1 && TO_VERIFY+=("$n"); done ;;
esac
if [ ${#TO_VERIFY[@]} -gt 0 ]; then
  # leftovers of an interrupted earlier run (whose process is gone)
  docker ps -a --filter label=selextract.verify --format '{{.ID}} {{.Label "selextract.verify"}}' |
    while read -r id pid; do kill -0 "$pid" 2>/dev/null || docker rm -f "$id" >/dev/null; done
  docker network ls --filter label=selextract.verify --format '{{.ID}} {{.Label "selextract.verify"}}' |
    while read -r id pid; do kill -0 "$pid" 2>/dev/null || docker network rm "$id" >/dev/null; done
  NETWORK=selextract-verify-$RUN_ID
  docker network create --label selextract.verify="$RUN_ID" "$NETWORK" >/dev/null
  VDIR=$(mktemp -d /tmp/selextract-verify.XXXXXX); SCRATCH+=("$VDIR")
  for name in "${TO_VERIFY[@]}"; do
    [ "$name" = base ] && continue
    t=$SECONDS
    log "verifying $(ref "$name") ..."
    VFAIL=0
    "verify_$name" || true    # the check calls inside record failures in VFAIL
    if [ $VFAIL = 0 ]; then
      log "verified $(ref "$name") in $((SECONDS - t)) s"
    else
      FAILED+=("$name")
      log "VERIFICATION FAILED: $(ref "$name")"
    fi
    rm_verify_containers
  done
fi

# --- summary ----------------------------------------------------------------------------
log "images:"
for name in "${ALL[@]}"; do
  is_selected "$name" || [ "$name" = base ] || continue
  if [ -n "${REASON[$name]:-}" ]; then
    printf '[images]   %-34s skipped: %s\n' "$(ref "$name")" "${REASON[$name]}"
  elif docker image inspect "$(ref "$name")" >/dev/null 2>&1; then
    printf '[images]   %-34s %s\n' "$(ref "$name")" \
      "$(docker image inspect -f '{{.Size}}' "$(ref "$name")" | awk '{printf "%4d MB", $1/1e6}')"
  fi
done
log "built: ${BUILT[*]:-nothing}; total time $((SECONDS - T0)) s"
if [ ${#BUILD_FAILED[@]} -gt 0 ]; then die "build failed for: ${BUILD_FAILED[*]} (logs: $LOGS/)"; fi
if [ ${#FAILED[@]} -gt 0 ]; then die "verification failed for: ${FAILED[*]}"; fi
