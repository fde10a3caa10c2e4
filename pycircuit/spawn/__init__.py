"""Spawning workers: the zygote (``_zygote``, a warm single-threaded forker),
a worker's life (``_worker``) and the server's side of it (``_spawner``)."""
