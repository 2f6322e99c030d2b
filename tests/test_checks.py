"""The shared checks of scalar options (`bayesde/_checks.py`): one wording and one set of
accepted types for every model, engine and function."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import bayesde as bd
from bayesde._checks import check_bool, check_int, check_real, is_int, is_real


def test_integers_are_refused_below_the_minimum_or_as_booleans_floats_and_strings():
    assert check_int("X.n", 3) == 3 and type(check_int("X.n", np.int64(3))) is int
    assert check_int("X.n", None, optional=True) is None
    for bad, minimum, what in ((0, 1, "a positive integer"), (-1, 0, "a non-negative integer"),
                               (1, 2, "an integer >= 2"), (True, 1, "a positive integer"),
                               (2.0, 1, "a positive integer"), ("2", 1, "a positive integer")):
        with pytest.raises(ValueError, match=re.escape(f"X.n: expected {what}, got {bad!r}.")):
            check_int("X.n", bad, minimum)
    with pytest.raises(ValueError, match=re.escape("X.n: expected a positive integer or None (per batch), got 0.")):
        check_int("X.n", 0, optional=True, hint="per batch")


def test_reals_are_refused_outside_their_range_and_as_booleans_nan_and_strings():
    assert check_real("X.a", np.float32(0.5), 0.0, 1.0) == 0.5 and check_real("X.a", 1, 0.0, 1.0) == 1.0
    assert check_real("X.a", None, optional=True) is None
    cases = [
        (dict(low=0.0, high=1.0), 1.5, "a number in [0, 1]"),
        (dict(low=0.0, high=1.0, open_low=True, open_high=True), 0.0, "a number in (0, 1)"),
        (dict(low=0.0, open_low=True), 0, "a number > 0"),
        (dict(low=0.0), -0.1, "a number >= 0"),
        (dict(high=2.0, open_high=True), 2.0, "a number < 2"),
        (dict(low=0.0, high=1.0), True, "a number in [0, 1]"),
        (dict(low=0.0, high=1.0), float("nan"), "a number in [0, 1]"),
        (dict(), float("inf"), "a number"),
        (dict(low=0.0, noun="a weight"), "1", "a weight >= 0"),
    ]
    for kw, bad, what in cases:
        with pytest.raises(ValueError, match=re.escape(f"X.a: expected {what}, got {bad!r}.")):
            check_real("X.a", bad, **kw)
    assert is_real(np.int8(3)) and not is_real(np.bool_(True)) and not is_int(np.bool_(True)) and is_int(np.uint8(1))
    # 0-d arrays (a value a user computed with NumPy or JAX) count; arrays of more and booleans do not
    assert check_real("X.a", jnp.float32(0.25), 0.0, 1.0) == 0.25 and check_int("X.n", np.array(4)) == 4
    assert not is_real(jnp.array(True)) and not is_real(np.zeros(2)) and not is_real(1j)


def test_booleans_are_true_or_false_only():
    assert check_bool("X.b", False) is False
    with pytest.raises(ValueError, match=re.escape("X.b: expected True or False, got 1.")):
        check_bool("X.b", 1)


def test_models_engines_and_functions_refuse_in_the_shared_wording():
    cases = [
        (lambda: bd.SVI(num_steps=True), "SVI.num_steps: expected a positive integer, got True."),
        (lambda: bd.models.LatentSDE(noise=-1.0), "LatentSDE.noise: expected an sd > 0 or None (None: learned), got -1.0."),
        (lambda: bd.models.LatentSDE(kl_weight="a"), "LatentSDE.kl_weight: expected a weight >= 0, got 'a'."),
        (lambda: bd.models.FractionalSDE(hurst=1.0), "FractionalSDE.hurst: expected a number in (0, 1), got 1.0."),
        (lambda: bd.models.FractionalSDE(latent_dim=True), "FractionalSDE.latent_dim: expected a positive integer, got True."),
        (lambda: bd.models.FractionalSDE(obs_spacing="1"), "FractionalSDE.obs_spacing: expected a number > 0, got '1'."),
        (lambda: bd.calibration.rank_uniformity(np.zeros(5), 0), "rank_uniformity.num_draws: expected a positive integer, got 0."),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            make()


def test_no_module_writes_the_boolean_refusal_inline():
    """`isinstance(x, bool)` joined to a type or range check is what `_checks` is for."""
    inline = re.compile(r"isinstance\([^()]*,\s*bool\)\s*(or|and)\b|\b(or|and)\s+(not\s+)?isinstance\([^()]*,\s*bool\)")
    root = Path(bd.__file__).parent
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "_checks.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if inline.search(line)]
    assert found == []
