"""The house rules that keep bayesde easy to extend: no import circle (imports inside
functions included), models that say whether they minibatch, `fit` that never ignores an
option silently, and a plain NumPyro function that saves and loads like any model."""

import ast
import unittest.mock
from pathlib import Path

import jax
import numpy as np
import numpyro
import pytest

import bayesde as bd
from _programs import normal_mean

from bayesde.inference._registry import ENGINES, RUNNERS, AbstractEngine, EngineInfo, EngineResult, register_engine

PACKAGE = Path(bd.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every `import` and `from ... import` in the package, at any depth (functions,
    methods, `if TYPE_CHECKING` blocks excluded), as edges between bayesde modules."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import sub` names a submodule when `pkg.sub` is a module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_edge(a: str, b: str) -> bool:
    # A package's __init__ re-exporting its own modules is not a circle of logic.
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_circle():
    graph = _import_graph()
    graph = {a: {b for b in bs if not _is_package_edge(a, b)} for a, bs in graph.items()}
    assert _cycles(graph) == []


def test_import_graph_sees_imports_inside_functions():
    graph = _import_graph()
    # `fit` warns through the diagnostics module, imported inside the function.
    assert "bayesde.inference._diagnostics" in graph["bayesde.inference._fit"]


# ----------------------------------------------------------------- minibatches
@pytest.fixture(scope="module")
def lv():
    return bd.datasets.lotka_volterra(n_series=16, n_times=12, t_max=6.0, key=jax.random.key(0))


def _lv_model():
    return bd.models.ODE(
        bd.models.lotka_volterra_field, priors=bd.models.lotka_volterra_priors(beta=0.025, delta=0.025)
    )


def test_ode_minibatch_scales_the_likelihood_by_n_over_b(lv):
    model = _lv_model().adapt(lv)
    batch = lv.batch()
    with numpyro.handlers.seed(rng_seed=0):
        tr = numpyro.handlers.trace(model.program).get_trace(batch, subsample_size=4)
    assert tr["y"]["value"].shape == (4, 12, 2)
    assert tr["y"]["scale"] == pytest.approx(16 / 4)
    assert tr["y0"]["value"].shape == (4, 2)
    # The same series' times and values reach the likelihood as the plate's indices.
    idx = np.asarray(tr["series"]["value"])
    np.testing.assert_allclose(tr["y"]["value"], np.asarray(batch.ys)[idx])
    with numpyro.handlers.seed(rng_seed=0):
        full = numpyro.handlers.trace(model.program).get_trace(batch)
    assert full["y"]["value"].shape == (16, 12, 2) and full["y"].get("scale") in (None, 1.0)


def test_ode_fits_on_minibatches(lv):
    post = bd.fit(_lv_model(), lv, method="svi", batch_size=8, num_steps=30, num_samples=5,
                  key=jax.random.key(1), progress_bar=False, warn=False)
    assert post.samples["y0"].shape == (1, 5, 16, 2)
    assert np.all(np.isfinite(post.loss))
    pred = post.predict(lv.ts[:, :3], key=jax.random.key(2))
    assert pred.samples.shape == (5, 16, 3, 2)



def test_batch_size_is_refused_for_a_function_without_subsample_size(lv):
    with pytest.raises(ValueError, match=r"fit: batch_size=4 needs a model that fits on minibatches, "
                                         r"but the model function 'normal_mean' takes no `subsample_size`"):
        bd.fit(normal_mean, lv, method="svi", batch_size=4, num_steps=5, key=jax.random.key(0))


def test_register_model_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="register_model: expected a subclass of bd.models.AbstractModel"):
        bd.models.register_model(dict)


def testnormal_mean_function_saves_loads_and_predicts_the_same(lv, tmp_path):
    post = bd.fit(normal_mean, lv, method="svi", num_steps=50, num_samples=20, key=jax.random.key(3),
                  progress_bar=False, warn=False)
    post.save(tmp_path / "run")
    again = bd.load(tmp_path / "run")
    assert type(again.model).__name__ == "FunctionModel" and again.model.fn is normal_mean
    a = post.predict(lv.ts[:, -3:], key=jax.random.key(4))
    b = again.predict(lv.ts[:, -3:], key=jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a.samples), np.asarray(b.samples))


def test_samplers_refuse_a_model_of_point_estimates():
    data = bd.datasets.lotka_volterra(n_series=2, n_times=8, t_max=4.0, key=jax.random.key(0))
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8)
    with pytest.raises(ValueError, match=r"fit: method='nuts' samples latent variables, but LatentSDE has "
                                         r"\d+ parameters that are point estimates .*; fit it with method='svi'"):
        bd.fit(model, data, method="nuts", num_warmup=2, num_samples=2, key=jax.random.key(0))


def test_param_module_builds_its_module_once_and_not_at_all_from_a_parameter_store():
    """One network construction gives every leaf's initial value (not one per leaf), and a
    trace whose parameters come from the store builds none (only the shape template)."""
    import equinox as eqx

    calls = []

    def make(key):
        calls.append(key)
        return eqx.nn.MLP(3, 2, 4, 2, key=key)

    def program():
        return bd.networks.param_module("net", make)

    trace = numpyro.handlers.trace(numpyro.handlers.seed(program, 0)).get_trace()
    assert len(trace) == 6 and len(calls) == 2  # 3 layers x (weight, bias); the template and one build
    built = jax.tree_util.tree_leaves(eqx.filter(make(calls[1]), eqx.is_array))
    for site, leaf in zip(trace.values(), built):
        np.testing.assert_array_equal(site["value"], leaf)
    calls.clear()
    store = {name: site["value"] for name, site in trace.items()}
    net = numpyro.handlers.substitute(numpyro.handlers.seed(program, 1), data=store)()
    assert len(calls) == 1  # the template only
    np.testing.assert_array_equal(net.layers[0].weight, store["net.layers.0.weight"])


# ----------------------------------------------------------------- engines
def test_every_engine_is_a_registered_class_with_run_and_a_typed_info():
    assert {"svi", "nuts", "blackjax-nuts", "chees"} <= set(ENGINES)
    for name, cls in ENGINES.items():
        assert cls.name == name and cls in RUNNERS
        assert issubclass(cls, AbstractEngine) and not getattr(cls.run, "__isabstractmethod__", False), name
        assert issubclass(cls.info_type, EngineInfo), name


def test_register_engine_refuses_a_class_without_run():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class NoRun:
        name = "no-run"

    with pytest.raises(TypeError, match="NoRun has no `run` method"):
        register_engine(NoRun)


def test_a_new_engine_is_one_class_that_fit_save_and_load_read(lv, tmp_path):
    """An engine written outside the package (prior draws as a 'posterior'), registered
    for this test only."""
    with unittest.mock.patch.dict(ENGINES), unittest.mock.patch.dict(RUNNERS):
        _check_new_engine(lv, tmp_path)


def _check_new_engine(lv, tmp_path):
    import dataclasses

    from numpyro.infer import Predictive

    @dataclasses.dataclass(frozen=True)
    class PriorInfo(EngineInfo):
        num_draws: int = 0

    @register_engine
    @dataclasses.dataclass(frozen=True)
    class PriorDraws(AbstractEngine):
        num_samples: int = 5
        name = "prior-draws"
        info_type = PriorInfo

        def run(self, model, batch, *, key, progress_bar):
            draws = Predictive(model.program, num_samples=self.num_samples, return_sites=["mu", "sigma"])(key, batch)
            samples = {k: np.asarray(v)[None] for k, v in draws.items() if k in ("mu", "sigma")}
            return EngineResult(samples=samples, params={}, sample_stats={}, loss=None,
                                info=PriorInfo(seconds=0.0, num_draws=self.num_samples))

    post = bd.fit(normal_mean, lv, method="prior-draws", num_samples=4, key=jax.random.key(0),
                  progress_bar=False, warn=False)
    assert post.samples["mu"].shape == (1, 4, 2) and post.info == PriorInfo(seconds=0.0, num_draws=4)
    assert post.predict(lv.ts[:, :2], key=jax.random.key(1)).samples.shape == (4, 16, 2, 2)
    post.save(tmp_path / "run")
    again = bd.load(tmp_path / "run")
    assert again.method == PriorDraws(num_samples=4) and again.info == post.info


def test_info_is_a_record_read_by_attribute_and_still_by_key():
    from bayesde.inference._engines import NUTS, NUTSInfo, as_info

    info = as_info({"seconds": 2.0, "max_tree_depth": 8, "from_an_older_run": 1}, NUTS)
    assert isinstance(info, NUTSInfo) and info.max_tree_depth == 8 and info.from_an_older_run == 1
    with pytest.warns(DeprecationWarning, match=r"info\.seconds"):
        assert info["seconds"] == 2.0
    with pytest.warns(DeprecationWarning):
        assert info.get("missing", "default") == "default"
    assert info.to_dict() == {"seconds": 2.0, "chain_method": None, "max_tree_depth": 8, "from_an_older_run": 1}


# ----------------------------------------------------------------- predictive
def test_the_predictive_chunk_budget_and_loop_live_in_one_module():
    owners = [p.name for p in PACKAGE.rglob("*.py") if "2**25" in p.read_text()]
    assert owners == ["_predictive.py"]
    # `distributed` supplies a placement and reads nothing private of a Posterior.
    text = (PACKAGE / "distributed.py").read_text()
    assert "post._" not in text and "from .inference" not in text


# ------------------------------------------------------- eager passes compile once
@pytest.mark.parametrize("name, kwargs", [("LatentSDE", dict(latent_dim=2, width=8)),
                                          ("FractionalSDE", dict(latent_dim=2, width=8)),
                                          ("BayesianNeuralODE", dict(state_dim=1, width=8))])
def test_eager_runs_of_a_program_compile_its_solver_core_once(name, kwargs):
    """NumPyro runs a program eagerly several times before a fit compiles anything (sites,
    guide set-up, the initial point's density and gradient). The solver core of each model
    sits behind `models._common.compiled`, so a second eager run on the same shapes reuses
    the first run's compilation, and both give finite values from their own keys."""
    from bayesde.models._common import compiled

    data = bd.datasets.ornstein_uhlenbeck(n_series=4, n_times=8, key=jax.random.key(0))
    model = getattr(bd.models, name)(**kwargs).adapt(data)
    batch = data.batch()

    def run(seed):
        with numpyro.handlers.seed(rng_seed=seed):
            return numpyro.handlers.trace(model.program).get_trace(batch)

    before = compiled._cached._cache_size()
    first = run(0)
    after_first = compiled._cached._cache_size()
    second = run(1)
    assert after_first > before
    assert compiled._cached._cache_size() == after_first
    assert np.isfinite(first["y"]["fn"].log_prob(first["y"]["value"]).sum())
    assert not np.allclose(first["y"]["fn"].mean, second["y"]["fn"].mean)
