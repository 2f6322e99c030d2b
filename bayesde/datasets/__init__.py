"""Bundled real data and simulators with known truth. Nothing here downloads."""

from ._registry import card as card
from ._registry import load as load
from ._registry import names as names
