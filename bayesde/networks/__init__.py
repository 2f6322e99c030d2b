"""Equinox networks and priors over their weights."""

from ._modules import leaf_names as leaf_names
from ._modules import mlp as mlp
from ._modules import param_module as param_module
from ._modules import sample_module as sample_module
