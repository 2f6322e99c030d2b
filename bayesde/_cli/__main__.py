"""`python -m bayesde._cli ...`, the same as the `bayesde` script."""

from . import main

main()
