"""standby benchmarks (issue 8): ``python -m bench.run`` or ``bench/bench.sh``; see BENCHMARKS.md.

Not tests: nothing here is collected by pytest, and nothing asserts on time. Each row module exposes
``run(ctx) -> list[Figure]``; ``bench.run`` prints every figure next to its baseline from the same run.
"""
