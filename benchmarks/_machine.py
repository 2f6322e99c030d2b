"""What the benchmark scripts record about the machine they ran on."""


def avx512():
    """Whether the CPU has AVX-512 (XLA's CPU speed depends on it; None if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512f" in f.read()
    except OSError:
        return None
