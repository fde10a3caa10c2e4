"""The ``pycircuit`` command line. Layer: top (uses the client and server).

Every user mistake ends in one line on stderr and a non-zero exit status;
tracebacks are for bugs only.
"""
from ._main import main

__all__ = ["main"]
