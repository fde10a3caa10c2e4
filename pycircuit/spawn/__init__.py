"""Spawning workers: the zygote (``_zygote``, a warm single-threaded forker),
the compiled code it keeps for its workers (``_codecache``), a worker's life
(``_worker``) and the server's side of it (``_spawner``)."""
