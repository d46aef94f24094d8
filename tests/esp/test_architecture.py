"""esp imports ikev2.enums only, and never aioipsec (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_esp_imports_only_ikev2_enums() -> None:
    modules = sorted(p.stem for p in (ROOT / "esp").glob("*.py") if p.stem != "__init__")
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module('esp.' + name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aioipsec', 'nat_t', 'tun')"
        " or (m.startswith('ikev2') and m not in ('ikev2', 'ikev2.enums'))]\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
