"""nmt: train neural machine translation models and serve them over HTTP."""

__version__ = "0.1.0"
