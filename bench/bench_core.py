#!/usr/bin/env python
"""Superseded by bench/run.py, which measures the same things (and more)
side by side with every peer; this keeps the old command working.

    python bench/bench_core.py [--quick] [--json FILE]

runs ``bench/run.py --only spawn,call,byvalue`` with the same options.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run

    sys.exit(run.main(["--only", "spawn,call,byvalue", *sys.argv[1:]]))
