"""bayesde models: each an immutable `eqx.Module` exposing a NumPyro program."""

from ._base import AbstractModel as AbstractModel
from ._base import Query as Query
from ..datasets._core_data import lotka_volterra_field as lotka_volterra_field
from ._ode import ODE as ODE
from ._ode import BayesianNeuralODE as BayesianNeuralODE
