"""Check that every wheel in a folder is a package pinned in requirements.lock, at its pin.

The image build makes the runtime dependency wheels with the lock as a constraint; this makes a
dependency the lock does not pin (a new transitive one, a drifted version) a build error instead
of an unpinned file in the image.

Usage: python hack/image/check_wheels.py requirements.lock WHEEL_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of the lock."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            found[_norm(m.group(1))] = m.group(2)
    return found


def problems(lock: Path, wheel_dir: Path) -> list[str]:
    locked = pins(lock)
    out = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        want = locked.get(_norm(name))
        if want is None:
            out.append(f"{wheel.name}: {name} is not pinned in {lock.name}; add it to the lock")
        elif want != version:
            out.append(f"{wheel.name}: {lock.name} pins {name}=={want}, got {version}")
    return out


def main() -> int:
    lock, wheel_dir = Path(sys.argv[1]), Path(sys.argv[2])
    found = problems(lock, wheel_dir)
    for p in found:
        print(f"error: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
