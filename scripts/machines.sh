#!/usr/bin/env bash
# Local machine test bed: machines that behave like fresh Debian 12 servers, each a container
# on this machine's Docker engine with all the privileges dockerd can give (image
# selextract/machine, see images/machine/run-args.sh): systemd as init, sshd with root key login, its own Docker engine
# (/var/lib/docker on a Docker volume), cloud-init from a NoCloud seed, ufw/fail2ban/cron
# installed, a "public" address and a private address. Traffic stays on this machine.
# See docs/machines.md.
#
# Usage: scripts/machines.sh COMMAND [ARGS]
#   up N [--prefix P] [--user-data DIR] [--insecure-registry ADDR|CIDR]... [--registry-ca ADDR=FILE]...
#        [--wait-cloud-init] [--timeout SECONDS]
#                     machines P-1 .. P-N (default prefix sxm) created if missing, booted, and
#                     waited for until SSH answers. DIR/<name>.yaml is a machine's cloud-init
#                     user-data (NoCloud seed); a machine without one boots with cloud-init
#                     disabled, like a Robot box. Registry options configure the inner Docker
#                     engines as a fresh server's: /etc/docker/daemon.json (which cloud-init and
#                     hardening then replace with theirs), /etc/docker/certs.d/ADDR/ca.crt.
#   seed NAME FILE    give NAME this cloud-init user-data (a new instance id); a running
#                     machine reboots (clean shutdown) so that cloud-init runs it
#   down [--prefix P] remove the machines (all on this engine, or P's) with their volumes;
#                     the networks too once no machine is left
#   status            name, state, addresses, SSH port and whether it answers, memory
#   env [--shell]     key path, networks, machines with addresses and keys: JSON, or shell
#                     assignments; `ssh -F <ssh_config> NAME` works too
#   ssh NAME [CMD...] ssh to NAME's public address with the key it was made with, as root (or
#                     $MACHINE_SSH_USER) on the port its sshd config names (or $MACHINE_SSH_PORT)
#   exec NAME CMD...  run CMD in NAME through Docker (for when SSH is locked down)
#   kill NAME         stop the whole machine at once, like pulling the power
#   stop NAME         clean shutdown (systemd poweroff)
#   start NAME        boot a killed or stopped machine, wait until SSH answers
# Environment: SELEXTRACT_STATE (SSH key: $SELEXTRACT_STATE/machines), MACHINES_PUBLIC_SUBNET
#   (default 198.18.0.0/24), MACHINES_PRIVATE_SUBNET (default 10.0.1.0/24; both /24, machines
#   from .10 up, .2-.9 left for services such as a registry), MACHINES_NO_BUILD=1 (do not run
#   scripts/build-images.sh machine first).
set -euo pipefail

export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH   # docker.io's client first
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SELEXTRACT_STATE:-$HOME/.local/state/selextract}/machines
KEY=$STATE/id_ed25519
IMAGE=selextract/machine:bookworm
LABEL=selextract.machine
NET_PUBLIC=selextract-machines-public
NET_PRIVATE=selextract-machines-private
PUBLIC_SUBNET=${MACHINES_PUBLIC_SUBNET:-198.18.0.0/24}
PRIVATE_SUBNET=${MACHINES_PRIVATE_SUBNET:-10.0.1.0/24}
FIRST_HOST=10 LAST_HOST=191   # .192/26 is the networks' range for containers without a fixed address
SSH_OPTS=(-o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
          -o BatchMode=yes -o ConnectTimeout=5)

# shellcheck source=../images/machine/run-args.sh
. "$REPO/images/machine/run-args.sh"

log() { echo "[machines] $*" >&2; }
die() { echo "[machines] ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# "a.b.c" of a /24 subnet "a.b.c.0/24"
net24() {
  [[ $1 =~ ^(([0-9]{1,3}\.){2}[0-9]{1,3})\.0/24$ ]] || die "subnet '$1' must be a /24 like 10.0.1.0/24"
  echo "${BASH_REMATCH[1]}"
}
PUB24=$(net24 "$PUBLIC_SUBNET")
PRIV24=$(net24 "$PRIVATE_SUBNET")

need_docker() { docker info >/dev/null 2>&1 || die "no Docker engine (run scripts/setup-docker.sh first)"; }

# one lock for every bed on this machine (they share the networks and the address range)
lock() { mkdir -p "$STATE"; exec 9>"${TMPDIR:-/tmp}/selextract-machines.lock"; flock 9; }

machines() {  # machine names, optionally of one prefix, in name order
  local f=(--filter "label=$LABEL")
  [ -z "${1:-}" ] || f+=(--filter "label=$LABEL.prefix=$1")
  docker ps -a "${f[@]}" --format '{{.Names}}' | sort -V
}
label() { docker inspect -f "{{ index .Config.Labels \"$LABEL.$2\" }}" "$1"; }
state() { docker inspect -f '{{.State.Status}}' "$1"; }
is_machine() {
  [ -n "${1:-}" ] || die "name a machine (see: $0 status)"
  [ "$(docker inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null)" = "$1" ] ||
    die "no machine named '$1' (machines: $(machines | xargs))"
}

ensure_key() {
  mkdir -p "$STATE"; chmod 700 "$STATE"
  [ -s "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C selextract-machines -f "$KEY"
}

ensure_image() {
  [ "${MACHINES_NO_BUILD:-}" = 1 ] && { docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE"; return; }
  local t=$SECONDS l=$STATE/build-images.log
  "$REPO/scripts/build-images.sh" machine >"$l" 2>&1 || { tail -20 "$l" >&2; die "building $IMAGE failed (log: $l)"; }
  grep -q "built: .*machine" "$l" && log "built $IMAGE in $((SECONDS - t)) s (log: $l)"
  return 0
}

ensure_network() {  # NAME SUBNET A.B.C [--internal]
  local name=$1 subnet=$2 p=$3; shift 3
  local have
  have=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$name" 2>/dev/null || true)
  if [ -n "$have" ]; then
    [ "$have" = "$subnet" ] || die "network $name has subnet $have, not $subnet (remove it: $0 down)"
    return 0
  fi
  docker network create --label "$LABEL.network=1" --subnet "$subnet" --gateway "$p.1" \
    --ip-range "$p.192/26" "$@" "$name" >/dev/null 2>"$STATE/net.err" ||
    die "could not create network $name ($subnet): $(cat "$STATE/net.err") - set MACHINES_PUBLIC_SUBNET / MACHINES_PRIVATE_SUBNET to a free /24"
}

used_hosts() {  # host numbers of all machines (running or not): their addresses stay theirs
  docker ps -a --filter "label=$LABEL" --format "{{.Label \"$LABEL.public\"}}" | awk -F. '{print $4}'
}
next_host() {  # USED: lowest host number >= FIRST_HOST not in USED (one number a line)
  local n
  for ((n = FIRST_HOST; n <= LAST_HOST; n++)); do
    grep -qx "$n" <<<"$1" || { echo "$n"; return; }
  done
  die "no free address left in $PUBLIC_SUBNET"
}

ssh_port() {  # the port NAME's sshd config names (sshd takes the first Port: its .d files come first)
  docker exec "$1" sh -c 'cat /etc/ssh/sshd_config.d/*.conf /etc/ssh/sshd_config 2>/dev/null; true' |
    awk 'tolower($1) == "port" { print $2; found = 1; exit } END { if (!found) print 22 }'
}
ssh_answers() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c 4 <&3" 2>/dev/null | grep -q '^SSH-'; }

# wait_ssh NAME DEADLINE: until sshd answers on the public address (echoes seconds taken)
wait_ssh() {
  local name=$1 deadline=$2 ip port t0=$SECONDS i=0
  ip=$(label "$name" public)
  port=$(ssh_port "$name") || { log "$name is $(state "$name"): $(docker logs --tail 5 "$name" 2>&1 | tr '\n' ' ')"; return 1; }
  until ssh_answers "$ip" "$port"; do
    if [ $((++i % 10)) = 0 ] && [ "$(state "$name")" != running ]; then
      log "$name is $(state "$name"): $(docker logs --tail 5 "$name" 2>&1 | tr '\n' ' ')"; return 1
    fi
    if [ $SECONDS -ge "$deadline" ]; then
      log "$name: no SSH on $ip:${port:-22} after $((SECONDS - t0)) s; failed units: $(docker exec "$name" systemctl --failed --plain --no-legend 2>&1 | awk '{print $1}' | xargs)"
      return 1
    fi
    sleep 0.5
  done
  echo $((SECONDS - t0))
}

# stage_seed NAME FILE DIR: NoCloud user-data + meta-data (fresh instance id, the test-bed key)
stage_seed() {
  local name=$1 file=$2 dir=$3
  [ -r "$file" ] || die "user-data file '$file' for $name not readable"
  mkdir -p "$dir"
  cp "$file" "$dir/user-data"
  printf 'instance-id: %s-%s\nlocal-hostname: %s\npublic-keys:\n  - %s\n' \
    "$name" "$(date +%s%N)" "$name" "$(cat "$(label "$name" key).pub")" >"$dir/meta-data"
  chmod 600 "$dir/user-data" "$dir/meta-data"
}
put_seed() {  # NAME FILE: place the seed in the (created or stopped or running) machine
  local name=$1 dir
  dir=$(mktemp -d "$STATE/seed.XXXXXX")
  stage_seed "$name" "$2" "$dir/nocloud"
  # into the existing seed dir: a new nocloud/ is created, an old one gets both files replaced
  docker cp "$dir/nocloud" "$name:/var/lib/cloud/seed/"
  rm -rf "$dir"
}

create_machine() {  # NAME PREFIX HOSTNUM USERDATA|"" ; registry settings from REGISTRIES / CAS
  local name=$1 prefix=$2 n=$3 userdata=$4 vol=selextract-machine-$1-docker dir a f
  docker volume create --label "$LABEL=$name" "$vol" >/dev/null
  docker create --name "$name" --hostname "$name" \
    --label "$LABEL=$name" --label "$LABEL.prefix=$prefix" \
    --label "$LABEL.public=$PUB24.$n" --label "$LABEL.private=$PRIV24.$n" --label "$LABEL.key=$KEY" \
    "${MACHINE_ARGS[@]}" --stop-timeout 30 \
    -v "$vol:/var/lib/docker" \
    --network "$NET_PUBLIC" --ip "$PUB24.$n" \
    "$IMAGE" >/dev/null
  docker network connect --ip "$PRIV24.$n" "$NET_PRIVATE" "$name"
  dir=$(mktemp -d "$STATE/stage.XXXXXX")
  mkdir -m 700 "$dir/ssh"
  install -m 600 "$KEY.pub" "$dir/ssh/authorized_keys"
  docker cp "$dir/ssh" "$name:/root/.ssh"
  if [ ${#REGISTRIES[@]} -gt 0 ]; then  # a flag would clash with the daemon.json hardening writes
    printf '{"insecure-registries": [%s]}\n' "$(printf '"%s", ' "${REGISTRIES[@]}" | sed 's/, $//')" >"$dir/daemon.json"
    docker cp "$dir/daemon.json" "$name:/etc/docker/daemon.json"
  fi
  if [ ${#CAS[@]} -gt 0 ]; then
    for a in "${CAS[@]}"; do
      f=${a#*=}; mkdir -p "$dir/certs.d/${a%%=*}"; install -m 644 "$f" "$dir/certs.d/${a%%=*}/ca.crt"
    done
    docker cp "$dir/certs.d" "$name:/etc/docker/certs.d"
  fi
  rm -rf "$dir"
  [ -z "$userdata" ] || put_seed "$name" "$userdata"
}

write_ssh_config() {  # $STATE/ssh_config: `ssh -F $STATE/ssh_config NAME` for every machine
  local m
  for m in $(machines); do
    printf 'Host %s\n  HostName %s\n  User root\n  IdentityFile %s\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n\n' \
      "$m" "$(label "$m" public)" "$(label "$m" key)"
  done >"$STATE/ssh_config"
}

# boot NAME...: start them and wait for SSH in parallel
boot() {
  local deadline=$((SECONDS + TIMEOUT)) m failed=() out
  out=$(mktemp -d "$STATE/boot.XXXXXX")
  for m in "$@"; do [ "$(state "$m")" = running ] || docker start "$m" >/dev/null; done
  for m in "$@"; do
    (if s=$(wait_ssh "$m" "$deadline"); then echo "$s" >"$out/$m"; fi) &
  done
  wait
  for m in "$@"; do
    if [ -s "$out/$m" ]; then log "$m: SSH answers on $(label "$m" public) after $(cat "$out/$m") s"; else failed+=("$m"); fi
  done
  rm -rf "$out"
  [ ${#failed[@]} -eq 0 ] || die "machine(s) did not come up: ${failed[*]}"
}

wait_cloud_init() {  # NAME...: cloud-init status --wait on the seeded ones
  local m st failed=()
  for m in "$@"; do
    docker exec "$m" test -e /var/lib/cloud/seed/nocloud/user-data || continue
    st=$(docker exec "$m" cloud-init status --wait --long 2>&1 || true)
    if grep -q '^status: done' <<<"$st"; then log "$m: cloud-init done"
    else failed+=("$m"); log "$m: cloud-init did not finish cleanly:"; sed 's/^/    /' <<<"$st" >&2; fi
  done
  [ ${#failed[@]} -eq 0 ] || die "cloud-init failed on: ${failed[*]}"
}

cmd_up() {
  local count="" prefix=sxm userdata_dir="" wait_ci=0 t0=$SECONDS t name i n todo=() all=()
  REGISTRIES=() CAS=() TIMEOUT=180
  while [ $# -gt 0 ]; do
    case "$1" in
      --prefix) prefix=${2:-}; shift 2 || die "--prefix needs a name" ;;
      --user-data) userdata_dir=${2:-}; shift 2 || die "--user-data needs a directory" ;;
      --insecure-registry) REGISTRIES+=("${2:-}"); shift 2 || die "--insecure-registry needs HOST:PORT" ;;
      --registry-ca) CAS+=("${2:-}"); shift 2 || die "--registry-ca needs HOST:PORT=FILE" ;;
      --wait-cloud-init) wait_ci=1; shift ;;
      --timeout) TIMEOUT=${2:-}; shift 2 || die "--timeout needs seconds" ;;
      -*) die "unknown option for up: $1 (see --help)" ;;
      *) [ -z "$count" ] || die "up takes one count, got '$count' and '$1'"; count=$1; shift ;;
    esac
  done
  [[ $count =~ ^[1-9][0-9]*$ ]] || die "up needs a machine count >= 1 (got '${count}')"
  [[ $prefix =~ ^[a-z][a-z0-9]{0,19}$ ]] || die "prefix '$prefix' must be lowercase letters/digits, starting with a letter (max 20)"
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout needs seconds (got '$TIMEOUT')"
  [ -z "$userdata_dir" ] || [ -d "$userdata_dir" ] || die "--user-data '$userdata_dir' is not a directory"
  for i in ${REGISTRIES[@]+"${REGISTRIES[@]}"}; do
    [[ $i =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ || $i =~ ^[0-9.]+/[0-9]{1,2}$ ]] ||
      die "--insecure-registry '$i' is not HOST[:PORT] or a CIDR"
  done
  for i in ${CAS[@]+"${CAS[@]}"}; do
    [[ ${i%%=*} =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ && $i == *=* ]] || die "--registry-ca '$i' is not HOST[:PORT]=FILE"
    [ -r "${i#*=}" ] || die "--registry-ca: CA file '${i#*=}' not readable"
  done
  need_docker; lock; ensure_key; machine_run_args
  t=$SECONDS; ensure_image; local t_image=$((SECONDS - t))
  ensure_network "$NET_PUBLIC" "$PUBLIC_SUBNET" "$PUB24"
  ensure_network "$NET_PRIVATE" "$PRIVATE_SUBNET" "$PRIV24" --internal
  if [ -n "$userdata_dir" ]; then
    for i in "$userdata_dir"/*.yaml; do
      [ -e "$i" ] || continue
      name=$(basename "$i" .yaml)
      [[ $name =~ ^$prefix-[0-9]+$ ]] && [ "${name#"$prefix"-}" -le "$count" ] ||
        die "user-data $i names no machine of this bed ($prefix-1 .. $prefix-$count)"
    done
  fi
  t=$SECONDS
  local used; used=$(used_hosts)
  for ((i = 1; i <= count; i++)); do
    name=$prefix-$i; all+=("$name")
    if docker inspect "$name" >/dev/null 2>&1; then
      is_machine "$name"
      continue
    fi
    n=$(next_host "$used"); used+=$'\n'$n
    local ud=""
    [ -z "$userdata_dir" ] || [ ! -e "$userdata_dir/$name.yaml" ] || ud=$userdata_dir/$name.yaml
    create_machine "$name" "$prefix" "$n" "$ud"
    todo+=("$name")
  done
  local t_create=$((SECONDS - t))
  write_ssh_config
  t=$SECONDS
  boot "${all[@]}"
  local t_boot=$((SECONDS - t))
  [ $wait_ci = 0 ] || wait_cloud_init "${all[@]}"
  log "up $count: ${#todo[@]} created, ${#all[@]} running; image check ${t_image} s, create ${t_create} s, boot to SSH ${t_boot} s, total $((SECONDS - t0)) s"
}

cmd_down() {
  local prefix="" m v n
  case "${1:-}" in
    --prefix) prefix=${2:-}; [ -n "$prefix" ] || die "--prefix needs a name" ;;
    "") ;;
    *) die "unknown option for down: $1" ;;
  esac
  need_docker; lock
  for m in $(machines "$prefix"); do
    docker rm -f -v "$m" >/dev/null
    docker volume rm "selextract-machine-$m-docker" >/dev/null 2>&1 || true
    log "removed $m"
  done
  if [ -z "$(machines)" ]; then
    for v in $(docker volume ls -q --filter "label=$LABEL"); do docker volume rm "$v" >/dev/null; done
    for n in "$NET_PUBLIC" "$NET_PRIVATE"; do
      docker network inspect "$n" >/dev/null 2>&1 || continue
      if ! docker network rm "$n" >/dev/null 2>&1; then
        log "network $n kept: containers still attached: $(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$n")"
      fi
    done
    rm -f "$STATE/ssh_config"
  else
    write_ssh_config
  fi
}

cmd_status() {
  local m st ip port ssh mem
  need_docker
  [ -n "$(machines)" ] || { log "no machines (start some: $0 up N)"; return 0; }
  declare -A MEM=()
  # shellcheck disable=SC2046  # one name per word
  while read -r m mem; do MEM[$m]=$mem; done < <(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $(machines) 2>/dev/null | awk '{print $1, $2}')
  printf '%-14s %-8s %-15s %-15s %-5s %-4s %s\n' NAME STATE PUBLIC PRIVATE PORT SSH MEMORY
  for m in $(machines); do
    st=$(state "$m") ip=$(label "$m" public) port=- ssh=no
    if [ "$st" = running ]; then port=$(ssh_port "$m"); ! ssh_answers "$ip" "$port" || ssh=yes; fi
    printf '%-14s %-8s %-15s %-15s %-5s %-4s %s\n' "$m" "$st" "$ip" "$(label "$m" private)" "$port" "$ssh" "${MEM[$m]:--}"
  done
}

json_str() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

cmd_env() {
  local m first=1 port st var
  need_docker
  if [ "${1:-}" = --shell ]; then
    printf 'MACHINES_KEY=%q\nMACHINES_SSH_CONFIG=%q\nMACHINES_PUBLIC_NETWORK=%s\nMACHINES_PRIVATE_NETWORK=%s\n' \
      "$KEY" "$STATE/ssh_config" "$NET_PUBLIC" "$NET_PRIVATE"
    printf 'MACHINES_PUBLIC_SUBNET=%s\nMACHINES_PRIVATE_SUBNET=%s\nMACHINES_PUBLIC_GATEWAY=%s\nMACHINES="%s"\n' \
      "$PUBLIC_SUBNET" "$PRIVATE_SUBNET" "$PUB24.1" "$(machines | xargs)"
    for m in $(machines); do
      var=MACHINE_$(tr 'a-z-' 'A-Z_' <<<"$m")
      printf '%s_PUBLIC=%s\n%s_PRIVATE=%s\n%s_KEY=%q\n' "$var" "$(label "$m" public)" "$var" "$(label "$m" private)" \
        "$var" "$(label "$m" key)"
    done
    return
  fi
  [ -z "${1:-}" ] || die "unknown option for env: $1 (--shell or nothing)"
  printf '{"key": %s, "public_key": %s, "ssh_config": %s,\n' "$(json_str "$KEY")" \
    "$(json_str "$(cat "$KEY.pub" 2>/dev/null || true)")" "$(json_str "$STATE/ssh_config")"
  printf ' "networks": {"public": {"name": "%s", "subnet": "%s", "gateway": "%s"}, "private": {"name": "%s", "subnet": "%s", "gateway": "%s"}},\n' \
    "$NET_PUBLIC" "$PUBLIC_SUBNET" "$PUB24.1" "$NET_PRIVATE" "$PRIVATE_SUBNET" "$PRIV24.1"
  printf ' "machines": ['
  for m in $(machines); do
    st=$(state "$m") port=null
    [ "$st" != running ] || port=$(ssh_port "$m")
    [ $first = 1 ] || printf ','
    first=0
    printf '\n  {"name": "%s", "prefix": "%s", "public": "%s", "private": "%s", "state": "%s", "ssh_user": "root", "ssh_port": %s, "key": %s}' \
      "$m" "$(label "$m" prefix)" "$(label "$m" public)" "$(label "$m" private)" "$st" "$port" "$(json_str "$(label "$m" key)")"
  done
  printf '\n]}\n'
}

cmd_ssh() {
  local name=${1:-}; shift || true
  is_machine "$name"
  [ "$(state "$name")" = running ] || die "$name is $(state "$name") (start it: $0 start $name)"
  exec ssh "${SSH_OPTS[@]}" -i "$(label "$name" key)" -p "${MACHINE_SSH_PORT:-$(ssh_port "$name")}" \
    "${MACHINE_SSH_USER:-root}@$(label "$name" public)" "$@"
}

cmd_seed() {
  local name=${1:-} file=${2:-}
  [ -n "$file" ] || die "usage: $0 seed NAME USER-DATA-FILE"
  is_machine "$name"; lock; ensure_key
  put_seed "$name" "$file"
  if [ "$(state "$name")" = running ]; then
    log "$name: seeded; rebooting so that cloud-init runs it"
    docker restart "$name" >/dev/null
    TIMEOUT=${MACHINES_TIMEOUT:-180}; boot "$name"
  else
    log "$name: seeded; cloud-init runs it at the next start"
  fi
}

main() {
  local cmd=${1:-}; shift || true
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env "$@" ;;
    ssh) cmd_ssh "$@" ;;
    exec) is_machine "${1:-}"; local m=$1; shift; exec docker exec -i "$m" "$@" ;;
    kill) is_machine "${1:-}"; docker kill "$1" >/dev/null; log "$1: power cut" ;;
    stop) is_machine "${1:-}"; docker stop "$1" >/dev/null; log "$1: shut down" ;;
    start) is_machine "${1:-}"; TIMEOUT=${MACHINES_TIMEOUT:-180}; boot "$1" ;;
    seed) cmd_seed "$@" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$cmd' (see --help)" ;;
  esac
}
main "$@"
