"""Evaluate checkpoints: ``python eval.py --ckpt RUN/last.ckpt [--ckpt ...] --out DIR``.

The logic is in ``lightning_pspc/evaluation/checkpoints.py``; ``python eval.py --help`` lists the
options.
"""

import sys

from lightning_pspc.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
