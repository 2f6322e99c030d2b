"""Checks of the scalar options every model, engine and function of bayesde takes: an
integer with a least value, or a finite real number in a range.

One place for them, so that every option is refused the same way: booleans are refused
(Python counts `True` as the integer 1, so `num_steps=True` would otherwise run one
step), NumPy scalars are accepted, and the message always reads
`"<where>: expected <what>[ (<hint>)], got <value>."`, naming the option where the user
set it (`"SVI.num_steps"`, `"backtest.horizon"`).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _kind(value) -> str:
    """The NumPy dtype kind of a scalar (`"i"`, `"u"`, `"f"`, ...; `""` for anything else):
    Python and NumPy numbers, and 0-d arrays (NumPy or JAX), booleans of every sort `"b"`."""
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, (int, np.integer)):
        return "i"
    if isinstance(value, (float, np.floating)):
        return "f"
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype).kind if dtype is not None and getattr(value, "ndim", None) == 0 else ""


def is_int(value) -> bool:
    """Whether `value` is an integer (Python, NumPy or a 0-d array), booleans not counted."""
    return _kind(value) in ("i", "u")


def is_real(value) -> bool:
    """Whether `value` is a finite real number (Python, NumPy or a 0-d array), booleans
    not counted."""
    return _kind(value) in ("i", "u", "f") and math.isfinite(float(value))


def _refuse(where: str, what: str, optional: bool, hint: Optional[str], value) -> ValueError:
    what = what + (" or None" if optional else "") + (f" ({hint})" if hint else "")
    return ValueError(f"{where}: expected {what}, got {value!r}.")


def check_int(where: str, value, minimum: int = 1, *, optional: bool = False,
              hint: Optional[str] = None) -> Optional[int]:
    """`value` as an `int`, or `ValueError` unless it is an integer `>= minimum` (or
    `None` when `optional`)."""
    if optional and value is None:
        return None
    if not is_int(value) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise _refuse(where, what, optional, hint, value)
    return int(value)


def check_real(where: str, value, low: float = -math.inf, high: float = math.inf, *,
               open_low: bool = False, open_high: bool = False, optional: bool = False,
               noun: str = "a number", hint: Optional[str] = None) -> Optional[float]:
    """`value` as a `float`, or `ValueError` unless it is a finite real number between
    `low` and `high` (each end excluded when `open_low` / `open_high`; an infinite end
    is no bound), or `None` when `optional`. `noun` names what the number is (`"a
    fraction"`, `"an sd"`) in the message."""
    if optional and value is None:
        return None
    ok = is_real(value)
    if ok:
        v = float(value)
        ok = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        if math.isfinite(low) and math.isfinite(high):
            what = f"{noun} in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        elif math.isfinite(low):
            what = f"{noun} {'>' if open_low else '>='} {low:g}"
        elif math.isfinite(high):
            what = f"{noun} {'<' if open_high else '<='} {high:g}"
        else:
            what = noun
        raise _refuse(where, what, optional, hint, value)
    return float(value)


def check_bool(where: str, value) -> bool:
    """`value`, or `ValueError` unless it is `True` or `False` (not 0 or 1)."""
    if not isinstance(value, bool):
        raise _refuse(where, "True or False", False, None, value)
    return value
