"""`python -m bus` is the `bus` command."""
import sys

from .cli import main

sys.exit(main())
