"""Spawning workers: the zygote (``_zygote``, a warm single-threaded forker),
the compiled code it keeps for its workers (``_codecache``), a worker's life
(``_worker``, ``_life``) and the server's side of it (``_spawner``).

Importing this package gives every runtime of the process the ``acid``
debugging service: servers and workers import it, and so does the client
API (``run_in_back``), so every runtime of a circuit can be debugged by
its address. acid is imported only when a runtime is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..runtime._runtime import on_install

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime


def _install_acid(rt: Runtime) -> None:
    from ..acid import install

    install(rt)


on_install(_install_acid)
