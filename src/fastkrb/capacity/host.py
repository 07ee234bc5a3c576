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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "loadavg", "command_output", "dist_version", "host_facts"]


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
