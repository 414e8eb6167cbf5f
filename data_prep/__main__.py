"""``python -m data_prep`` == ``sashimi-prep``."""
import sys

from .cli import main

sys.exit(main())
