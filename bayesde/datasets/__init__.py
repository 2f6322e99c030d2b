"""Bundled real data and simulators with known truth. Nothing here downloads."""

from ._registry import card as card
from ._registry import load as load
from ._registry import names as names
from ._core_data import LV_TRUTH as LV_TRUTH
from ._core_data import hare_lynx as hare_lynx
from ._core_data import lotka_volterra as lotka_volterra
