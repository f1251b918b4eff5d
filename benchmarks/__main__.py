"""``python -m benchmarks``: the ``callsense bench`` command group."""

from benchmarks.core import bench_group

bench_group(prog_name="python -m benchmarks")
