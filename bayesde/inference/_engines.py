"""The built-in engines and the engine table, in one place to import from.

The interface and the table live in `_registry` (`AbstractEngine`, `EngineInfo`,
`EngineResult`, `ENGINES`, `register_engine`); each engine lives in its own file
(`_svi`, `_mcmc`, `_chees`, ...) and registers itself there. This module imports the
built-in ones, so that importing it fills the table; nothing here imports it back.
"""

from __future__ import annotations

from typing import Union

from ._mcmc import NUTS as NUTS
from ._mcmc import BlackJAXNUTS as BlackJAXNUTS
from ._mcmc import BlackJAXNUTSInfo as BlackJAXNUTSInfo
from ._mcmc import NUTSInfo as NUTSInfo
from ._mcmc import run_blackjax_nuts as run_blackjax_nuts
from ._mcmc import run_nuts as run_nuts
from ._registry import ENGINES as ENGINES
from ._registry import RUNNERS as RUNNERS
from ._registry import AbstractEngine as AbstractEngine
from ._registry import EngineInfo as EngineInfo
from ._registry import EngineResult as EngineResult
from ._registry import _bind as _bind
from ._registry import _check_sampler as _check_sampler
from ._registry import _fast as _fast
from ._registry import _progress as _progress
from ._registry import as_info as as_info
from ._registry import register_engine as register_engine
from ._registry import resolve_method as resolve_method
from ._svi import SVI as SVI
from ._svi import SVIInfo as SVIInfo
from ._svi import default_optimizer as default_optimizer
from ._svi import run_svi as run_svi

__all__ = [
    "SVI", "NUTS", "BlackJAXNUTS", "ENGINES", "RUNNERS", "register_engine", "resolve_method",
    "AbstractEngine", "EngineInfo", "EngineResult", "SVIInfo", "NUTSInfo", "BlackJAXNUTSInfo",
    "default_optimizer", "as_info",
]

# Importable from here as before the engines moved to their own files.
_MOVED = (run_svi, run_nuts, run_blackjax_nuts, _bind, _check_sampler, _fast, _progress)

#: The built-in engines' options classes (`fit` accepts any registered engine).
Method = Union[SVI, NUTS, BlackJAXNUTS]
