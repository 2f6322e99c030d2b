"""Bundled real data and simulators with known truth. Nothing here downloads."""

from ._registry import card as card
from ._registry import load as load
from ._registry import names as names
from ._core_data import LV_TRUTH as LV_TRUTH
from ._core_data import hare_lynx as hare_lynx
from ._core_data import lotka_volterra as lotka_volterra
from ._sde_sims import stochastic_lorenz as stochastic_lorenz, geometric_brownian_motion as geometric_brownian_motion, double_well as double_well  # noqa: E501
from . import _sde_sims, _co2  # noqa: F401,E402  (registers "stochastic_lorenz", "geometric_brownian_motion", "double_well", "co2")
from ._fou import fractional_ou as fractional_ou
from ._fou import nile as nile
from ._tumor import tumor_growth as tumor_growth
from . import _theoph  # noqa: F401,E402  (registers "theoph")
from . import _real  # noqa: F401,E402  (registers "sunspots", "sunspots_gappy", "elnino", "us_macro_growth")
from ._real import elnino as elnino, sunspots as sunspots, sunspots_gappy as sunspots_gappy, us_macro_growth as us_macro_growth  # noqa: E501
from ._panel import ornstein_uhlenbeck as ornstein_uhlenbeck, cir as cir, damped_oscillator as damped_oscillator  # noqa: E501
from ._panel import regime_switching as regime_switching, lv_process_noise as lv_process_noise  # noqa: E501
from ._panel import seasonal_trend as seasonal_trend, PanelCase as PanelCase, panel as panel  # noqa: E501
