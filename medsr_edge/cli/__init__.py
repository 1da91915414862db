"""The ``medsr-edge`` command line: a thin layer over runtime, distill, export and benchmarks."""
