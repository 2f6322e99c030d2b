"""What the benchmark scripts record about the machine they ran on."""


def avx512():
    """Whether the CPU has AVX-512 (XLA's CPU speed depends on it; None if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512f" in f.read()
    except OSError:
        return None


def machine():
    """The record every benchmark JSON carries: backend, devices, CPU, versions."""
    import os
    import platform

    import jax

    import bayesde as bd

    return dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()], cpu_count=os.cpu_count(),
                avx512=avx512(), processor=platform.processor() or platform.machine(), jax=jax.__version__,
                bayesde=bd.__version__)
