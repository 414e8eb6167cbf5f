"""python -m sashimi.cauchy: see bench.py."""
from .bench import main

main()
