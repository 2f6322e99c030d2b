"""Running JAX in subprocesses with forced CPU devices or as several processes: the device
count (`XLA_FLAGS`) and `jax.distributed` must be set before JAX starts, and a pytest
process has one device. Shared by the tests of `bd.distributed` and data-parallel SVI."""

import os
import socket
import subprocess
import sys


def device_env(devices: int) -> dict:
    """The environment of a subprocess that sees `devices` CPU devices."""
    env = dict(os.environ)
    env.update(
        # kept beside the suite's own flags (tests/conftest.py)
        XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip(),
        JAX_PLATFORMS="cpu",
        BAYESDE_FAST="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes_and_one(worker: str, tmp_path, *, timeout: float) -> None:
    """Run `python -c worker PROCESS_ID NUM_PROCESSES PORT TMP_PATH` as processes 0 and 1
    of a 2-process job (2 CPU devices each) and as a single process (1 device); each
    writes its results under `tmp_path`. Fails with the stderr of a process that fails."""
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", worker, str(i), "2", port, str(tmp_path)],
            env=device_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        single = subprocess.run(
            [sys.executable, "-c", worker, "0", "1", port, str(tmp_path)],
            env=device_env(1), capture_output=True, text=True, timeout=timeout,
        )
        assert single.returncode == 0, single.stderr[-3000:]
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
