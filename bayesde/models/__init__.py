"""bayesde models: each an immutable `eqx.Module` exposing a NumPyro program."""

from ._base import AbstractModel as AbstractModel
from ._base import Query as Query
from ._base import register_model as register_model
from ._function import FunctionModel as FunctionModel
from ..datasets._core_data import lotka_volterra_field as lotka_volterra_field
from ..datasets._core_data import lotka_volterra_priors as lotka_volterra_priors
from ._ode import ODE as ODE
from ._ode import BayesianNeuralODE as BayesianNeuralODE
from ._latent_sde import LatentSDE as LatentSDE
from ._fractional import FractionalSDE as FractionalSDE
from ._bncde import BNCDE as BNCDE
from ._tecde import TECDE as TECDE
from . import encoders as encoders
from . import families as families
from . import likelihoods as likelihoods
