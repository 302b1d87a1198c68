"""``python -m maf_jax.cli``: the ``maf-jax`` command."""

import sys

from maf_jax.cli.main import main

sys.exit(main())
