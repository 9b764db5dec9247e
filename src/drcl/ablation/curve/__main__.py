"""``python -m drcl.ablation.curve``: :func:`drcl.ablation.curve.runner.main`."""

import sys

from drcl.ablation.curve.runner import main

sys.exit(main())
