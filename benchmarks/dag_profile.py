"""Per-task wall time and peak memory of a pipeline run through kfp.local (`imagelingo run`).

kfp.local's SubprocessRunner starts each task as its own process tree (`sh -ec ...` running
`python3 -m kfp.dsl.executor_main ... --function_to_execute <component>`; see any
components/*/component.yaml's command), from threads of the `imagelingo run` process, so two
feature shards run at once. Nothing reports their resources, so this samples /proc: every
`interval` seconds it walks the run's descendants, labels each subtree by the component its top
process executes, and keeps per task instance

- wall time: from the top process's start (its /proc starttime, exact) to the last sample that
  saw it (short by at most the longest gap between samples, `resolution_s`: `interval` plus
  the time a walk of /proc takes, more on a loaded machine);
- peak RSS: the largest VmHWM (the kernel's high-water mark of resident memory) among the
  subtree's processes, as wait4's ru_maxrss in the in-process benchmark is the largest of a
  process and the children it waited for; a process that lived less than `interval` can be missed.

Linux only (/proc).
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "--function_to_execute"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, start in seconds since boot), for every process readable now."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # the command name, field 2, is in parentheses and may hold spaces
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[19]) / CLOCK_TICKS)
    return out


def _task_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv]
    return words[words.index(MARKER) + 1] if MARKER in words[:-1] else None


def _peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class TaskInstance:
    task: str
    pid: int
    started: float  # seconds since boot
    last_seen: float
    peak_kib: int = 0
    pids: set[int] = field(default_factory=set)


class TaskSampler(threading.Thread):
    """Samples the task subtrees under `root` until stop() (a daemon thread)."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.instances: dict[int, TaskInstance] = {}
        self.max_gap = 0.0  # the longest time between two samples: the wall times' resolution
        self._last = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def sample(self) -> None:
        now, table = _uptime(), _processes()
        if self._last is not None:
            self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in table.items():
            children.setdefault(parent, []).append(pid)
        stack = [(pid, None) for pid in children.get(self.root, [])]
        while stack:
            pid, instance = stack.pop()
            if instance is None and (task := _task_of(pid)):
                instance = self.instances.setdefault(
                    pid, TaskInstance(task, pid, table[pid][1], now)
                )
            if instance is not None:
                instance.last_seen = now
                instance.pids.add(pid)
                instance.peak_kib = max(instance.peak_kib, _peak_rss_kib(pid))
            stack.extend((child, instance) for child in children.get(pid, []))

    def rows(self, since: float) -> list[dict]:
        """One row per task instance in start order; `start_s` from `since` (seconds since boot);
        instances of one component (ParallelFor shards) are numbered."""
        ordered = sorted(self.instances.values(), key=lambda i: i.started)
        counts: dict[str, int] = {}
        for instance in ordered:
            counts[instance.task] = counts.get(instance.task, 0) + 1
        seen: dict[str, int] = {}
        rows = []
        for instance in ordered:
            seen[instance.task] = seen.get(instance.task, 0) + 1
            many = counts[instance.task] > 1
            rows.append(
                {
                    "task": f"{instance.task} #{seen[instance.task]}" if many else instance.task,
                    "component": instance.task,
                    "start_s": round(instance.started - since, 2),
                    "seconds": round(instance.last_seen - instance.started, 2),
                    "peak_rss_mib": round(instance.peak_kib / 1024),
                }
            )
        return rows


def profile(command: list[str], env: dict, interval: float = 0.2) -> dict:
    """Run `command` (an `imagelingo run`), sampling its tasks; fails if it fails."""
    started = _uptime()
    process = subprocess.Popen(command, env=env)
    sampler = TaskSampler(process.pid, interval)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed with exit code {code}")
    return {
        "seconds": round(_uptime() - started, 2),
        "tasks": sampler.rows(since=started),
        "resolution_s": round(sampler.max_gap, 2),
    }
