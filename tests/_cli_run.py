"""Run the command line as a user would (`python -m bayesde._cli ...` in a subprocess, CPU
only, warnings off), shared by the CLI tests."""

import os
import subprocess
import sys


def cli(*args, cwd, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "bayesde._cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
