"""Runs the given tests against each named mutant of the last mutation run (``mutants/``, made by
scripts/mutation.sh), and says for each whether the tests kill it. Usage:

    python scripts/mutant_check.py 'starmodel_asgi.identity.x_default_user__mutmut_17' ... -- tests/test_x.py

A mutant name may be a glob (``'starmodel_asgi.identity.*'``): it then stands for every mutant of that
name that the last run left surviving. The test files are copied into ``mutants/tests`` first."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"


def survivors() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [line.split(":")[0].strip() for line in out.splitlines() if line.strip().endswith(": survived")]


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    split = argv.index("--")
    names, tests = argv[:split], argv[split + 1 :]
    if any("*" in name for name in names):
        left = survivors()
        names = [m for name in names for m in (fnmatch.filter(left, name) if "*" in name else [name])]
    for test in tests:
        path = test.split("::")[0]
        shutil.copy(ROOT / path, MUTANTS / path)
    env = {**os.environ, "PYTHONPATH": str(MUTANTS)}
    alive = []
    for name in names:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout=20", *tests],
            cwd=MUTANTS,
            env={**env, "MUTANT_UNDER_TEST": name},
            capture_output=True,
            text=True,
        )
        verdict = "killed" if run.returncode == 1 else "SURVIVED" if run.returncode == 0 else f"exit {run.returncode}"
        if run.returncode != 1:
            alive.append(name)
        print(f"{verdict:9} {name}", flush=True)
    clean = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=MUTANTS,
        env={**env, "MUTANT_UNDER_TEST": ""},
        capture_output=True,
        text=True,
    )
    print(f"clean run: exit {clean.returncode} ({clean.stdout.strip().splitlines()[-1]})")
    return 1 if clean.returncode else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
