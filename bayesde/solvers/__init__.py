"""A thin layer over diffrax, plus the fixed-grid scan path for SDEs."""

from ._sde import brownian_increments as brownian_increments
from ._sde import solve_sde_grid as solve_sde_grid
from ._ode import failure_log_prob as failure_log_prob
from ._ode import solve_ode as solve_ode
from ._fbm import MarkovFBM as MarkovFBM, fbm_covariance as fbm_covariance, fbm_speeds as fbm_speeds
from ._fbm import fbm_weights as fbm_weights, ma_fbm_covariance as ma_fbm_covariance
from ._grid import interp_linear as interp_linear, refine_grid as refine_grid, time_grid as time_grid
from ._schemes import AbstractSDEScheme as AbstractSDEScheme, Euler as Euler, Heun as Heun
from ._schemes import Milstein as Milstein
