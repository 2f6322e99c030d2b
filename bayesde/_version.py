__version__ = "0.1.0"
#: Version of the on-disk format written by `Posterior.save`; `load` refuses others.
FORMAT_VERSION = 1
