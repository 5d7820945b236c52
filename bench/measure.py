"""Measuring what the benchmarks report: wall time, CPU seconds and peak memory of a
process tree (the peers, the Pulumi CLI) or of a set of Docker containers (Selextract)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- process trees ------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _pss(pid: int) -> int:
    """Proportional set size (shared pages split between their users), else RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS bytes, process count) of `pid` and all its descendants right now."""
    tree, total, count, todo = _children(), 0, 0, [pid]
    while todo:
        p = todo.pop()
        total += _pss(p)
        count += 1
        todo.extend(tree.get(p, ()))
    return total, count


@dataclass
class ProcResult:
    returncode: int
    seconds: float
    cpu_seconds: float  # the process and every descendant it waited for
    peak_tree_mb: float  # sampled sum of PSS over the tree
    peak_processes: int  # most processes in the tree at once (Pulumi: one per provider)
    peak_single_rss_mb: float  # largest single process (kernel's ru_maxrss)
    stdout: str
    stderr: str


def run_measured(
    cmd: list[str], *, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 1800, interval=0.3
) -> ProcResult:
    """Run `cmd` to completion (killed at `timeout`), sampling its process tree's RSS."""
    out_path, err_path = Path(f"/tmp/bench-{os.getpid()}-{time.monotonic_ns()}.out"), None
    err_path = out_path.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        peak = procs = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            mem, count = tree_memory(proc.pid)
            peak, procs = max(peak, mem), max(procs, count)
            if time.monotonic() - start > timeout:
                os.killpg(proc.pid, 9)
            time.sleep(interval)
        seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = ProcResult(
        proc.returncode,
        seconds,
        usage.ru_utime + usage.ru_stime,
        peak / 2**20,
        procs,
        usage.ru_maxrss / 1024,
        out_path.read_text(),
        err_path.read_text(),
    )
    out_path.unlink()
    err_path.unlink()
    return result


# --- containers (cgroup v1 with the cgroupfs driver, or cgroup v2) ---------------------------


def _cg(controller: str, cid: str) -> Path:
    for path in (
        CGROUP / controller / "docker" / cid,
        CGROUP / "system.slice" / f"docker-{cid}.scope",
        CGROUP / "docker" / cid,
    ):
        if path.exists():
            return path
    raise FileNotFoundError(f"no cgroup for container {cid[:12]}")


def container_cpu_ns(cid: str) -> int:
    v1 = CGROUP / "cpuacct" / "docker" / cid / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text())
    stat = (_cg("", cid) / "cpu.stat").read_text()
    usec = next(int(line.split()[1]) for line in stat.splitlines() if line.startswith("usage_usec"))
    return usec * 1000


def container_mem(cid: str) -> int:
    """Working set like `docker stats`: usage minus inactive file cache."""
    v1 = CGROUP / "memory" / "docker" / cid
    if v1.exists():
        usage = int((v1 / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_inactive_file", 0))
    base = _cg("", cid)
    usage = int((base / "memory.current").read_text())
    stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
    return usage - int(stat.get("inactive_file", 0))


@dataclass
class ContainerMeter:
    """CPU seconds and peak working set of a set of containers between start() and stop()."""

    containers: dict[str, str]  # name -> full id
    interval: float = 0.2
    cpu: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    peak_total_mb: float = 0.0

    def start(self) -> ContainerMeter:
        self._cpu0 = {n: container_cpu_ns(c) for n, c in self.containers.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for name, cid in self.containers.items():
                try:
                    mem = container_mem(cid)
                except (OSError, FileNotFoundError):
                    continue
                total += mem
                self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mem / 2**20)
            self.peak_total_mb = max(self.peak_total_mb, total / 2**20)
            self._stop.wait(self.interval)

    def stop(self) -> ContainerMeter:
        self._stop.set()
        self._thread.join()
        for name, cid in self.containers.items():
            try:
                self.cpu[name] = (container_cpu_ns(cid) - self._cpu0[name]) / 1e9
            except (OSError, FileNotFoundError):
                self.cpu[name] = float("nan")
        return self

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())
