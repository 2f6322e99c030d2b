import itertools
import os
import tempfile

# One persistent XLA compilation cache for the whole session, shared with the tutorial
# and CLI subprocesses through the environment: every `fit` builds a fresh program, and
# fits of the same model on the same shapes then skip XLA compilation (numbers are the
# same; only compile time is saved). Set before JAX compiles anything.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="bayesde-xla-"))
os.environ.setdefault("BAYESDE_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite compiles hundreds of small programs and runs each briefly, so compiling is most
# of its time: XLA's CPU backend at LLVM optimisation level 0 compiles them several times
# faster and gives the same numbers up to float rounding, and with its older fusion code
# generator (fusion emitters off) a further third faster, with the same numbers on the fits
# compared. Only the tests run so; users' programs keep XLA's defaults. Subprocesses (CLI,
# tutorials) inherit them.
for _flag, _value in (("xla_backend_optimization_level", "0"), ("xla_cpu_use_fusion_emitters", "false")):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def getkey():
    """Fresh, reproducible keys: `getkey()` returns key 0, 1, 2, ... for each test."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))


#: Test files with the longest shared fixtures, longest first. Under pytest-xdist
#: (`--dist loadfile --no-loadscope-reorder`, see pyproject.toml) each file is one unit of
#: work, so its module-scoped fixtures (compiled fits) are built once, and units are handed
#: out in collection order: these go first and the short files fill in at the end.
_LONGEST_FIRST = ("test_tutorials", "test_inference", "test_latent_sde", "test_discrepancy", "test_cli",
                  "test_bncde", "test_fbm", "test_architecture", "test_fractional_sde", "test_cli_transform",
                  "test_ensemble", "test_docs", "test_chees", "test_panel", "test_sde_solver", "test_effects",
                  "test_dates", "test_arviz", "test_determinism", "test_distributed")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.stem, len(rank)))
