"""What a measurement ran on: CPU, cores, load, and the versions that decide the figures.

One reader for `fastkrb bench`'s report, benches/compare.py and benches/record.py, so every published
figure carries the same facts about its machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "loadavg", "command_output", "dist_version", "host_facts", "CpuSnapshot", "cpu_snapshot",
           "other_cores"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass(frozen=True)
class CpuSnapshot:
    """Host-wide busy CPU time (all cores, from /proc/stat) and this process's own, children included."""

    wall: float
    busy: float | None      # None where /proc/stat cannot be read
    own: float


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    ticks = [int(x) for x in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> CpuSnapshot:
    """Take one reading; :func:`other_cores` compares two."""
    t = os.times()
    return CpuSnapshot(time.monotonic(), _busy_seconds(),
                       t.user + t.system + t.children_user + t.children_system)


def other_cores(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """Cores other processes kept busy on average between two snapshots (what competed with the measurement).

    Our own CPU counts children only once they are reaped, so take ``after`` once every child of the
    interval has exited; None where the host does not say.
    """
    if before.busy is None or after.busy is None or after.wall <= before.wall:
        return None
    other = (after.busy - before.busy) - (after.own - before.own)
    return round(max(0.0, other) / (after.wall - before.wall), 2)


def command_output(argv: Sequence[str], cwd: str | os.PathLike[str] | None = None, timeout: float = 30) -> str:
    """A command's standard output, or "" when it is missing or fails (a fact we could not read)."""
    try:
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_facts(packages: Sequence[str] = ()) -> dict[str, Any]:
    """The machine and the libraries under a measurement (the krb5 and OpenSSL builds set MIT's side too)."""
    from fastkrb import __version__

    return {
        "cpu": cpu_model(), "cpus": os.cpu_count(), "loadavg": loadavg(), "platform": platform.platform(),
        "python": sys.version.split()[0], "python_ssl": ssl.OPENSSL_VERSION,
        "openssl": command_output(["openssl", "version"]), "mit_krb5": command_output(["krb5-config", "--version"]),
        "fastkrb": __version__, "packages": {d: dist_version(d) for d in packages},
    }
