"""Benchmarks and evaluations of callsense: speed, memory and accuracy measurements with their
results (``benchmarks/results``). They live beside the runtime packages, not in them, and are not
part of the wheel; run them from a source checkout (``callsense bench ...``, ``make bench``,
``python -m benchmarks ...``).
"""
