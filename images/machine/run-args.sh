# shellcheck shell=bash
# `docker create/run` options for a test-bed machine, sourced by scripts/machines.sh and by
# scripts/build-images.sh (verify_machine): one truth for how a machine container runs.
#
# Docker's --privileged grants every capability the kernel knows; where dockerd itself lacks
# one (on this build machine its bounding set lacks CAP_SYS_RESOURCE), runc cannot start such
# a container ("unable to apply caps"). So a machine gets every capability dockerd has, no
# seccomp filter, every device in its device cgroup (but only /dev's standard nodes: the
# host's disks and ttys stay out), its own cgroup namespace, and tmpfs /run as on a server.
# images/machine/machine-init makes the cgroups writable and /proc/sys read-only outside net.*.
machine_run_args() {
  local caps=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
    SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  local pid bnd=0xffffffffffff i
  pid=$(pgrep -o -x dockerd 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    bnd=0x$(awk '/^CapBnd/ { print $2 }' "/proc/$pid/status")
  fi
  MACHINE_ARGS=(--cap-add ALL)
  for i in "${!caps[@]}"; do
    (((bnd >> i) & 1)) || MACHINE_ARGS+=(--cap-drop "${caps[$i]}")
  done
  MACHINE_ARGS+=(--security-opt seccomp=unconfined --device-cgroup-rule 'a *:* rwm' --cgroupns=private
    --tmpfs /run:rw,nosuid,nodev,exec,mode=755 --tmpfs /run/lock:rw,nosuid,nodev,noexec,size=5m)
  if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]; then
    MACHINE_ARGS+=(--security-opt apparmor=unconfined)
  fi
}
