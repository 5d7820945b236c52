#!/usr/bin/env bash
# Sets up an offline Pulumi toolchain for Selextract's infrastructure program:
#   - the `pulumi` CLI,
#   - the Python language host `pulumi-language-python` (+ `pulumi-language-python-exec`),
#   - resource plugins docker 5.1.0, command 1.2.1, random 4.21.1 (the versions
#     the Python SDKs in pyproject pin), installed with `pulumi plugin install`,
#   - the hcloud 1.43.3 plugin (previews of the Hetzner stacks need it; skip it
#     with --without-hcloud or WITH_HCLOUD=0).
#
# Everything is built from Go modules (the only source reachable here: no
# registry ships Pulumi binaries), using the wrapper modules in tools/pulumi/.
# The language host, the command provider and docker.Image are small local
# implementations; see tools/pulumi/README.md for what each piece is and why.
#
# Idempotent and cached: binaries go to $SELEXTRACT_CACHE/pulumi/bin (or
# .../pulumi/build for plugins), Go's module and build caches to
# $SELEXTRACT_CACHE/go/{mod,build}; a piece whose inputs did not change is not
# rebuilt, so a second run takes seconds. Plugins are installed under
# ${PULUMI_HOME:-~/.pulumi}/plugins.
#
# Usage: scripts/setup-pulumi.sh [--without-hcloud] [--force] [-q|--quiet]
#   --without-hcloud  do not build the hcloud plugin (or WITH_HCLOUD=0); a failed
#                     hcloud build leaves the rest ready and exits 3
#   --with-hcloud     build it (the default; kept for older callers)
#   --force           rebuild every piece (ignore the stamps)
# Env: SELEXTRACT_CACHE (default ~/.cache/selextract), PULUMI_HOME,
#      PULUMI_MIN_VERSION (oldest acceptable `pulumi` already on PATH, 3.272.0),
#      SELEXTRACT_PULUMI_BUILD_FROM_SOURCE=1 (ignore a `pulumi` on PATH).
# Afterwards: source "$SELEXTRACT_CACHE/pulumi/env.sh"
set -euo pipefail

# ---------------------------------------------------------------- settings
PULUMI_VERSION=3.274.1
PULUMI_MIN_VERSION=${PULUMI_MIN_VERSION:-3.272.0}
# name version tools-dir
CORE_PLUGINS=("command 1.2.1 command" "random 4.21.1 random" "docker 5.1.0 docker")
HCLOUD_PLUGIN="hcloud 1.43.3 hcloud"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR="$REPO_ROOT/tools/pulumi"
CACHE_ROOT=${SELEXTRACT_CACHE:-$HOME/.cache/selextract}
PCACHE="$CACHE_ROOT/pulumi"
BIN_DIR="$PCACHE/bin"
PLUGIN_BUILD_DIR="$PCACHE/build"
SRC_DIR="$PCACHE/src"
STAMP_DIR="$PCACHE/stamps"
LOG_DIR="$PCACHE/logs"
PULUMI_HOME_DIR=${PULUMI_HOME:-$HOME/.pulumi}

WITH_HCLOUD=${WITH_HCLOUD:-1}
FORCE=0
QUIET=0
for arg in "$@"; do
  case "$arg" in
    --with-hcloud) WITH_HCLOUD=1 ;;
    --without-hcloud) WITH_HCLOUD=0 ;;
    --force) FORCE=1 ;;
    -q | --quiet) QUIET=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-pulumi.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { [ "$QUIET" = 1 ] || echo "[pulumi] $*"; }
die() { echo "[pulumi] ERROR: $*" >&2; exit 1; }
now() { date +%s; }
elapsed() { local s=$(($(now) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

mkdir -p "$BIN_DIR" "$PLUGIN_BUILD_DIR" "$SRC_DIR" "$STAMP_DIR" "$LOG_DIR"

# ---------------------------------------------------------------- Go
setup_go() {
  if [ -n "${GO:-}" ]; then return; fi
  if command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
  elif [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
  else
    die "Go is needed to build the Pulumi toolchain (Go >= 1.26.6; none found on PATH or at /usr/local/go/bin/go)"
  fi
  export GOTOOLCHAIN=local
  export GOMODCACHE="$CACHE_ROOT/go/mod"
  export GOCACHE="$CACHE_ROOT/go/build"
  export GOFLAGS="-modcacherw ${GOFLAGS:-}"
  export CGO_ENABLED=${CGO_ENABLED:-0}
  mkdir -p "$GOMODCACHE" "$GOCACHE"
  local v
  v=$("$GO" env GOVERSION) || die "cannot run $GO"
  v=${v#go}
  if [ "$(printf '%s\n%s\n' 1.26.6 "$v" | sort -V | head -1)" != 1.26.6 ]; then
    die "Go $v at $GO is too old: Pulumi $PULUMI_VERSION needs Go >= 1.26.6 (GOTOOLCHAIN=local: no download)"
  fi
}

# Progress label: a first build on a fresh machine (cold Go caches) takes
# about the given time on 2 cores; later builds reuse the Go build cache.
build_kind() { # estimate-for-a-cold-build
  if [ -n "$(find "$CACHE_ROOT/go/build" -mindepth 1 -maxdepth 1 2>/dev/null | head -1)" ]; then
    echo "incremental build, up to $1"
  else
    echo "cold build, ~$1"
  fi
}

# Hash of everything that decides a piece's output (cheap: no Go needed, so
# the warm path stays fast).
quick_hash() { # dir extra...
  local dir=$1; shift
  {
    (cd "$dir" && find . -type f ! -name '*.log' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

# True when the piece's binaries exist and were built from the same inputs.
stamp_ok() { # name hash binary...
  local name=$1 hash=$2; shift 2
  [ "$FORCE" = 1 ] && return 1
  local f
  for f in "$@"; do [ -x "$f" ] || return 1; done
  [ -f "$STAMP_DIR/$name" ] && [ "$(cat "$STAMP_DIR/$name")" = "$hash" ]
}

run_build() { # piece logfile cmd...
  local piece=$1 logf=$2; shift 2
  if ! "$@" >"$logf" 2>&1; then
    echo "[pulumi] ERROR: building $piece failed; last lines of $logf:" >&2
    tail -n 25 "$logf" >&2
    return 1
  fi
}

# ---------------------------------------------------------------- CLI
PULUMI=""
find_existing_pulumi() {
  [ "${SELEXTRACT_PULUMI_BUILD_FROM_SOURCE:-0}" = 1 ] && return 1
  local p v
  p=$(command -v pulumi 2>/dev/null) || return 1
  [ "$p" = "$BIN_DIR/pulumi" ] && return 1 # our own build: handled by the stamp
  v=$("$p" version 2>/dev/null | head -1) || return 1
  v=${v#v}
  if [ "$(printf '%s\n%s\n' "$PULUMI_MIN_VERSION" "$v" | sort -V | head -1)" = "$PULUMI_MIN_VERSION" ]; then
    log "using pulumi v$v already on PATH ($p)"
    PULUMI=$p
    return 0
  fi
  log "ignoring pulumi v$v on PATH ($p): older than $PULUMI_MIN_VERSION"
  return 1
}

build_cli() {
  local hash
  hash=$(quick_hash "$TOOLS_DIR/cli" "$PULUMI_VERSION")
  if stamp_ok cli "$hash" "$BIN_DIR/pulumi"; then
    log "CLI v$PULUMI_VERSION: cached ($BIN_DIR/pulumi)"
  else
    setup_go
    local t0 kind
    t0=$(now)
    kind=$(build_kind "10-20 min")
    log "building CLI v$PULUMI_VERSION ($kind)..."
    (cd "$TOOLS_DIR/cli" && run_build "the pulumi CLI" "$LOG_DIR/cli.log" \
      "$GO" build -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
      -o "$BIN_DIR/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) || exit 1
    mv -f "$BIN_DIR/pulumi.tmp" "$BIN_DIR/pulumi"
    echo "$hash" >"$STAMP_DIR/cli"
    log "built CLI in $(elapsed "$t0")"
  fi
  PULUMI="$BIN_DIR/pulumi"
}

# ---------------------------------------------------------------- language host
build_language_host() {
  # An official pulumi install ships its language hosts next to the CLI.
  if [ "$PULUMI" != "$BIN_DIR/pulumi" ]; then
    local beside
    beside="$(dirname "$PULUMI")/pulumi-language-python"
    if [ -x "$beside" ]; then
      log "Python language host: using $beside"
      return
    fi
  fi
  local hash exec_script="$BIN_DIR/pulumi-language-python-exec"
  hash=$(quick_hash "$TOOLS_DIR/language-python" "$PULUMI_VERSION")
  if stamp_ok language-python "$hash" "$BIN_DIR/pulumi-language-python" "$exec_script"; then
    log "Python language host: cached ($BIN_DIR/pulumi-language-python)"
    return
  fi
  setup_go
  local t0
  t0=$(now)
  log "building Python language host ($(build_kind "1-2 min"))..."
  (cd "$TOOLS_DIR/language-python" && run_build "pulumi-language-python" "$LOG_DIR/language-python.log" \
    "$GO" build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    -o "$BIN_DIR/pulumi-language-python.tmp" .) || exit 1
  mv -f "$BIN_DIR/pulumi-language-python.tmp" "$BIN_DIR/pulumi-language-python"
  # The Python half of the host ships in the SDK module.
  local sdk_dir
  sdk_dir=$(cd "$TOOLS_DIR/language-python" &&
    "$GO" list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3) ||
    die "cannot locate the github.com/pulumi/pulumi/sdk/v3 module"
  [ -f "$sdk_dir/python/cmd/pulumi-language-python-exec" ] ||
    die "pulumi-language-python-exec not found in $sdk_dir"
  install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$exec_script"
  echo "$hash" >"$STAMP_DIR/language-python"
  log "built Python language host in $(elapsed "$t0")"
}

# ---------------------------------------------------------------- providers
# Prepares a writable copy of a wrapper module when it needs one; prints the
# directory to build in.
prepare_src() { # piece
  local piece=$1
  case "$piece" in
    docker | hcloud)
      # Pulumi's terraform-plugin-sdk fork (pinned by pulumi-terraform-bridge)
      # needs one extra method to build against newer terraform-plugin-go: patch
      # a copy of it and point the wrapper module's replace at the copy.
      local work="$SRC_DIR/$piece" sdk_copy="$SRC_DIR/$piece-terraform-plugin-sdk-v2" fork_dir p
      rm -rf "$work" "$sdk_copy"
      mkdir -p "$work"
      cp -a "$TOOLS_DIR/$piece/." "$work/"
      chmod -R u+w "$work"
      (cd "$work" && "$GO" mod download github.com/hashicorp/terraform-plugin-sdk/v2) || return 1
      fork_dir=$(cd "$work" && "$GO" list -m -f '{{with .Replace}}{{.Dir}}{{end}}' \
        github.com/hashicorp/terraform-plugin-sdk/v2) || return 1
      if [ -n "$fork_dir" ]; then
        cp -a "$fork_dir" "$sdk_copy"
        chmod -R u+w "$sdk_copy"
        for p in "$TOOLS_DIR/docker/patches/"terraform-plugin-sdk-v2_*.go.in; do
          cp "$p" "$sdk_copy/helper/schema/zz_selextract_$(basename "${p%.go.in}").go"
        done
        (cd "$work" && "$GO" mod edit -replace="github.com/hashicorp/terraform-plugin-sdk/v2=$sdk_copy") || return 1
      fi
      echo "$work"
      ;;
    *) echo "$TOOLS_DIR/$piece" ;;
  esac
}

build_plugin() { # name version piece
  local name=$1 version=$2 piece=$3
  local out="$PLUGIN_BUILD_DIR/pulumi-resource-$name" hash
  local patches=""
  if [ "$piece" = hcloud ]; then patches=$(cat "$TOOLS_DIR/docker/patches/"* | sha256sum); fi
  hash=$(quick_hash "$TOOLS_DIR/$piece" "$name" "$version" "$patches")
  if stamp_ok "plugin-$name" "$hash" "$out"; then
    log "plugin $name $version: cached ($out)"
    return 0
  fi
  setup_go
  local t0 dir kind
  t0=$(now)
  case "$name" in
    command) kind=$(build_kind "1-2 min") ;;
    *) kind=$(build_kind "5-10 min") ;;
  esac
  log "building plugin $name $version ($kind)..."
  dir=$(prepare_src "$piece") || { echo "[pulumi] ERROR: preparing sources for $name failed" >&2; return 1; }
  (cd "$dir" && run_build "pulumi-resource-$name" "$LOG_DIR/$name.log" \
    "$GO" build -trimpath -ldflags "-s -w" -o "$out.tmp" .) || return 1
  mv -f "$out.tmp" "$out"
  echo "$hash" >"$STAMP_DIR/plugin-$name"
  log "built plugin $name in $(elapsed "$t0")"
}

# Installs a built plugin into $PULUMI_HOME/plugins unless that exact binary is
# already there. A different binary that this script did not install (e.g. an
# official download) is left alone.
install_plugin() { # name version
  local name=$1 version=$2
  local src="$PLUGIN_BUILD_DIR/pulumi-resource-$name"
  local dst="$PULUMI_HOME_DIR/plugins/resource-$name-v$version/pulumi-resource-$name"
  local mark="$STAMP_DIR/installed-$name-$version"
  if [ -x "$dst" ]; then
    if cmp -s "$src" "$dst"; then
      log "plugin $name $version: installed"
      return 0
    fi
    if [ ! -f "$mark" ] || [ "$(sha256sum <"$dst" | cut -d' ' -f1)" != "$(cat "$mark")" ]; then
      log "plugin $name $version: keeping the existing $dst (not installed by this script)"
      return 0
    fi
  fi
  log "installing plugin $name $version into $PULUMI_HOME_DIR/plugins"
  PULUMI_SKIP_UPDATE_CHECK=true "$PULUMI" plugin install resource "$name" "$version" \
    --file "$src" --reinstall >"$LOG_DIR/install-$name.log" 2>&1 || {
    cat "$LOG_DIR/install-$name.log" >&2
    die "pulumi plugin install resource $name $version failed"
  }
  sha256sum <"$src" | cut -d' ' -f1 >"$mark"
}

write_env() {
  local env="$PCACHE/env.sh"
  {
    echo "# Generated by scripts/setup-pulumi.sh: offline Pulumi toolchain."
    echo "case \":\$PATH:\" in"
    echo "  \":$BIN_DIR:\"*) ;;"
    echo "  *) export PATH=\"$BIN_DIR:\$PATH\" ;;"
    echo "esac"
    if [ -n "${PULUMI_HOME:-}" ]; then echo "export PULUMI_HOME=\"$PULUMI_HOME\""; fi
    echo "export PULUMI_SKIP_UPDATE_CHECK=true"
    echo "export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"
  } >"$env.tmp"
  mv -f "$env.tmp" "$env"
}

# ---------------------------------------------------------------- main
T_START=$(now)
log "cache: $PCACHE (plugins: $PULUMI_HOME_DIR/plugins)"
find_existing_pulumi || build_cli
build_language_host
for spec in "${CORE_PLUGINS[@]}"; do
  # shellcheck disable=SC2086
  set -- $spec
  build_plugin "$1" "$2" "$3" || exit 1
  install_plugin "$1" "$2"
done
write_env

hcloud_rc=0
if [ "$WITH_HCLOUD" = 1 ]; then
  # shellcheck disable=SC2086
  set -- $HCLOUD_PLUGIN
  if [ ! -d "$TOOLS_DIR/$3" ]; then
    echo "[pulumi] ERROR: no wrapper module for hcloud ($TOOLS_DIR/$3)" >&2
    hcloud_rc=3
  elif build_plugin "$1" "$2" "$3"; then
    install_plugin "$1" "$2"
  else
    hcloud_rc=3
  fi
fi

log "done in $(elapsed "$T_START")"
log "binaries: $BIN_DIR (CLI: $PULUMI); plugin builds: $PLUGIN_BUILD_DIR"
log "to use it:  source $PCACHE/env.sh"
log "       or:  export PATH=\"$BIN_DIR:\$PATH\" PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"
if [ "$hcloud_rc" != 0 ]; then
  echo "[pulumi] ERROR: the hcloud plugin failed to build (log: $LOG_DIR/hcloud.log); the rest of the toolchain is ready (--without-hcloud skips it)." >&2
  exit "$hcloud_rc"
fi
