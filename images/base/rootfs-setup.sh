#!/bin/sh
# Post-debootstrap tweaks for selextract/base:bookworm, applied to the rootfs
# directory given as $1 before it is tarred and `docker import`ed.
# Mirrors what the official debian:bookworm(-slim) image does: full apt
# sources (incl. security), no recommends, no docs/man/locales, no init
# scripts started by package installs, no apt caches left in layers.
set -eu
R=${1:?usage: rootfs-setup.sh ROOTFS_DIR}

rm -f "$R/etc/apt/sources.list"
cat >"$R/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

cat >"$R/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
cat >"$R/etc/apt/apt.conf.d/docker-no-recommends" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
echo 'Acquire::GzipIndexes "true";' >"$R/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Acquire::Languages "none";' >"$R/etc/apt/apt.conf.d/docker-no-languages"

cat >"$R/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
DPKG

# Package maintainer scripts must not try to start services during builds.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"

# debootstrap only installs from bookworm main: pull in bookworm-updates and
# bookworm-security fixes now, so every image starts from a patched base.
[ -e "$R/etc/resolv.conf" ] || cp /etc/resolv.conf "$R/etc/resolv.conf"
for d in null:3 zero:5 random:8 urandom:9; do
  n=$R/dev/${d%:*}
  if [ ! -c "$n" ]; then rm -f "$n"; mknod -m 666 "$n" c 1 "${d#*:}"; fi
done
chroot "$R" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get -y -qq -o Dpkg::Use-Pty=0 upgrade
chroot "$R" apt-get clean

# Drop what the dpkg excludes above would have dropped, plus caches and
# host-specific files (Docker provides hostname/hosts/resolv.conf at run time).
find "$R/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$R/usr/share/man/"* "$R/usr/share/info/"* "$R/usr/share/lintian/"*
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"*.bin "$R/var/cache/apt/archives/"*.deb \
       "$R/var/cache/debconf/"*-old "$R/var/log/"*.log "$R/var/log/apt/"* "$R/debootstrap" \
       "${R:?}/dev/"* "${R:?}/tmp/"* "${R:?}/run/"*
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
: >"$R/etc/hostname"
: >"$R/etc/machine-id"
