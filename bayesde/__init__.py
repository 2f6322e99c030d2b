"""bayesde: Bayesian neural differential equations in JAX."""

from . import datasets as datasets
from . import models as models
from . import networks as networks
from . import solvers as solvers
from ._data import TimeSeries as TimeSeries
from ._version import __version__ as __version__
