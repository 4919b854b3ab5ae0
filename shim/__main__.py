"""python -m shim."""
import sys

from .cli import main

sys.exit(main())
