"""Slow loops, for verification and benchmarks only.

:mod:`.pspc_loops` follows the structure of the published PSPC code (a Python loop over patch
positions); :mod:`.local_loops` follows the definitions of the local family one output pixel at a
time (docs/reference.md section 2) and the structure of the published PSPC-Flex and ELS code.
"""
