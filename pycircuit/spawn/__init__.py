"""Spawning workers: the zygote (``_zygote``, a warm single-threaded forker,
driven through ``_orders``),
the compiled code it keeps for its workers (``_codecache``), a worker's life
(``_worker``, ``_life``) and the server's side of it (``_spawner``).

Nothing is imported here: ``pycircuit`` loads this package at once (its name
is also the function ``pycircuit.spawn``), and ``import pycircuit`` stays cheap.
"""
