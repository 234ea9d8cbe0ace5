"""Train a diffusion denoiser: ``python train.py fit --config configs/<preset>.yaml [overrides]``.

See ``lightning_pspc/commands/train.py`` for the run folder, checkpoint and resume logic.
"""

from lightning_pspc.commands.train import main

if __name__ == "__main__":
    main()
