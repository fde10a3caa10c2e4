"""The ``pycircuit`` command line. Layer: top (uses the client and server).

Every user mistake ends in one line on stderr and a non-zero exit status;
tracebacks are for bugs only.
"""

from ._main import main, main_4cpu, main_4kill, main_4ls, main_4stk

__all__ = ["main", "main_4ls", "main_4stk", "main_4cpu", "main_4kill"]
