"""Where every benchmark writes its figures: bench/results/<name>.json, stamped with the machine and date."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, result: dict) -> str:
    """Writes the result (plus machine and date) and returns its path relative to the repository."""
    result = {**result, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return str(out.relative_to(RESULTS.parents[1]))
