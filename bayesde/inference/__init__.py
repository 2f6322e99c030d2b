"""Inference: `fit` over engines, `Posterior` and `Prediction`."""

from ._engines import SVI as SVI
from ._engines import NUTS as NUTS
from ._engines import BlackJAXNUTS as BlackJAXNUTS
from ._chees import Chees as Chees
from ._ensemble import Ensemble as Ensemble
from ._ensemble import average_quantiles as average_quantiles
from ._engines import default_optimizer as default_optimizer
from ._fit import fit as fit
from ._posterior import Posterior as Posterior
from ._prediction import Prediction as Prediction
from ._registry import AbstractEngine as AbstractEngine
from ._registry import EngineInfo as EngineInfo
from ._registry import EngineResult as EngineResult
from ._registry import register_engine as register_engine
from ._registry import ENGINES as ENGINES
