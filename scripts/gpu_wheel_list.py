"""Print ``name==version`` for every locked dependency that the GPU machine lacks (one a line).

Walks uv.lock from the project's dependencies (markers evaluated for CPython 3.12 on Linux x86_64), stops at ray
(only the ray executor needs it; its wheel is too large to travel) and at the packages the GPU image already holds
(the list in scripts/gpu_machine_packages.txt, from the device tool's KINDS.md, 2026-11-17).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}
NOT_CARRIED = {"ray"}  # the local executor never imports it


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def applies(dep: dict) -> bool:
    marker = dep.get("marker")
    return marker is None or Marker(marker).evaluate(ENV)


def missing_packages(lock: dict, present: set[str]) -> dict[str, str]:
    packages = {canonical(p["name"]): p for p in lock["package"]}
    root = next(p for p in lock["package"] if p.get("source", {}).get("editable") == "." or p["name"] == "robust-poison-bench")
    todo = [d for d in root.get("dependencies", []) if applies(d)]
    out: dict[str, str] = {}
    while todo:
        dep = todo.pop()
        name = canonical(dep["name"])
        if name in NOT_CARRIED or name in present or name in out:
            continue
        pkg = packages[name]
        out[name] = pkg["version"]
        todo += [d for d in pkg.get("dependencies", []) if applies(d)]
        for extra in dep.get("extra", []):
            todo += [d for d in pkg.get("optional-dependencies", {}).get(extra, []) if applies(d)]
    return dict(sorted(out.items()))


def main() -> int:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    present = {canonical(line.strip()) for line in (ROOT / "scripts" / "gpu_machine_packages.txt").read_text().split()
               if line.strip() and not line.startswith("#")}
    for name, version in missing_packages(lock, present).items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
