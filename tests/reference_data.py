"""Where the tests find reference data: ``tests/data/reference/`` inside the repository.

The files there are copies of the project's reference collection (known-answer text files and
public captures), each citing its upstream origin in its own header or in
``tests/data/reference/README.md``. No test reads anything outside the checkout.
"""

from __future__ import annotations

from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
REFERENCE_VECTORS = REFERENCE / "vectors"
CAPTURES = REFERENCE / "captures"
