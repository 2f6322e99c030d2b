"""bayesde models: each an immutable `eqx.Module` exposing a NumPyro program."""

from ._base import AbstractModel as AbstractModel
from ._base import Query as Query
