"""Compile the inhibitor student into a CKKS circuit: packing layout, linear layers,
attention, circuit IR, compiler and executors (docs/design.md §3)."""
