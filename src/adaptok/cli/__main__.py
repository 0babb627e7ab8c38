"""`python -m adaptok.cli ...` (and `torchrun ... -m adaptok.cli train ...`): the `adaptok`
command."""

import sys

from .main import main

sys.exit(main())
