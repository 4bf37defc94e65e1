"""The benchmark behind the README's table: see crossentropy/_benchmark.py.

    python benchmarks/bench.py [--quick] [--threads 1 2]

writes benchmarks/results/bench.{json,md,png}.
"""

import os
import sys

from crossentropy._benchmark import main

if __name__ == "__main__":
    sys.exit(main(default_out=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")))
