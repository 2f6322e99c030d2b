"""bayesde: Bayesian neural differential equations in JAX.

```python
import jax, bayesde as bd
data = bd.datasets.load("hare_lynx")
post = bd.fit(bd.models.BayesianNeuralODE(state_dim=2), data, method="svi", key=jax.random.key(0))
pred = post.predict(data.ts, key=jax.random.key(1))
```

Names are imported on first use (PEP 562), so `import bayesde` is fast and does not
start JAX; the command line relies on this to answer `--help` at once and to choose
the JAX platform (`--device`) before JAX starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import typing

from ._version import __version__ as __version__

#: Every public name -> (module, attribute); attribute `None` means the module itself.
#: Adding a public name is one line here (and one in the `TYPE_CHECKING` block below,
#: which `tests/test_cli.py` checks against this table).
_PUBLIC: dict[str, tuple[str, typing.Optional[str]]] = {
    "TimeSeries": ("._data", "TimeSeries"),
    "DataError": ("._data", "DataError"),
    "fit": (".inference", "fit"),
    "SVI": (".inference", "SVI"),
    "NUTS": (".inference", "NUTS"),
    "BlackJAXNUTS": (".inference", "BlackJAXNUTS"),
    "Chees": (".inference", "Chees"),
    "Ensemble": (".inference", "Ensemble"),
    "Posterior": (".inference", "Posterior"),
    "Prediction": (".inference", "Prediction"),
    "backtest": ("._backtest", "backtest"),
    "Backtest": ("._backtest", "Backtest"),
    "load": ("._load", "load"),
    "calibration": (".calibration", None),
    "datasets": (".datasets", None),
    "distributed": (".distributed", None),
    "effects": (".effects", None),
    "metrics": (".metrics", None),
    "models": (".models", None),
    "networks": (".networks", None),
    "plot": (".plot", None),
    "solvers": (".solvers", None),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    try:
        module, attr = _PUBLIC[name]
    except KeyError:
        # Subpackages outside the table (`bd.inference`) load as they did before names
        # became lazy; anything else is an ordinary missing attribute.
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'bayesde' has no attribute {name!r}") from None
        module, attr = f".{name}", None
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if typing.TYPE_CHECKING:  # what type checkers and griffe/mkdocstrings see
    from . import calibration as calibration
    from . import datasets as datasets
    from . import distributed as distributed
    from . import effects as effects
    from . import metrics as metrics
    from . import models as models
    from . import networks as networks
    from . import plot as plot
    from . import solvers as solvers
    from ._data import DataError as DataError
    from ._data import TimeSeries as TimeSeries
    from ._load import load as load
    from .inference import NUTS as NUTS
    from .inference import SVI as SVI
    from .inference import BlackJAXNUTS as BlackJAXNUTS
    from .inference import Chees as Chees
    from .inference import Ensemble as Ensemble
    from .inference import Posterior as Posterior
    from .inference import Prediction as Prediction
    from .inference import fit as fit
    from ._backtest import Backtest as Backtest
    from ._backtest import backtest as backtest
