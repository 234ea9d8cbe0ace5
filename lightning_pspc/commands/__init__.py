"""The command-line entry points: ``train.py`` (:mod:`.train`), ``eval.py`` (:mod:`.evaluate`),
``sweep.py`` (:mod:`.sweep`) and ``python -m lightning_pspc.commands.compare`` (:mod:`.compare`).

Each is a thin layer over the package: argument parsing, one line per bad input, exit codes.
"""
