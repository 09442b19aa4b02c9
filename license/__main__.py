"""`python -m facecore_license ...`: the `facecore license` commands without the face pipeline's
imports (what an authd machine runs)."""

from __future__ import annotations

import sys

from facecore_license.cli import main

if __name__ == "__main__":
    sys.exit(main())
