"""Training-set-size sweep: ``python sweep.py --config configs/sweep_fmnist.yaml --sizes 16 64 256``.

See ``lightning_pspc/commands/sweep.py`` (``python sweep.py --help``).
"""

import sys

from lightning_pspc.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
