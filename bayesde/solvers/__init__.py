"""A thin layer over diffrax, plus the fixed-grid scan path for SDEs."""

from ._sde import brownian_increments as brownian_increments
from ._sde import solve_sde_grid as solve_sde_grid
from ._ode import failure_log_prob as failure_log_prob
from ._ode import solve_ode as solve_ode
