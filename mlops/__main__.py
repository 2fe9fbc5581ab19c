"""`python -m mlops ...`: the command line, as the console starts it for background runs."""

import sys

from mlops.cli import main

sys.exit(main())
