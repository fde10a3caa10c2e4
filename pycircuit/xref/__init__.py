"""Cross-interfaces (``_x``) and the pure lease bookkeeping of their owners
(``_leases``). Public names are re-exported by ``pycircuit``."""
