"""Run every benchmark module in this folder, one subprocess each (so they don't share a heap)."""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
only = sys.argv[1:]
failed = 0
for path in sorted(here.glob("bench_*.py")):
    if only and not any(o in path.stem for o in only):
        continue
    print(f"== {path.stem}", flush=True)
    failed |= subprocess.call([sys.executable, str(path)], cwd=here.parent) != 0
sys.exit(failed)
