"""Profiles behind the explanations in bench/README.md; run the scripts
directly, e.g. ``python bench/profiles/call.py`` or
``python bench/profiles/spawn.py``."""
