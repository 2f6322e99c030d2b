"""bayesde: Bayesian neural differential equations in JAX.

```python
import jax, bayesde as bd
data = bd.datasets.load("hare_lynx")
post = bd.fit(bd.models.BayesianNeuralODE(dim=2), data, method="svi", key=jax.random.key(0))
pred = post.predict(data.ts, key=jax.random.key(1))
```
"""

from . import calibration as calibration
from . import datasets as datasets
from . import metrics as metrics
from . import models as models
from . import networks as networks
from . import plot as plot
from . import solvers as solvers
from ._data import TimeSeries as TimeSeries
from ._io import load as load
from ._version import __version__ as __version__
from .inference import NUTS as NUTS
from .inference import SVI as SVI
from .inference import BlackJAXNUTS as BlackJAXNUTS
from .inference import Posterior as Posterior
from .inference import Prediction as Prediction
from .inference import fit as fit
from . import effects as effects
from . import distributed as distributed
