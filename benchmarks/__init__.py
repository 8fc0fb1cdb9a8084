"""Side-by-side benchmarks: asgikit against the libraries users would pick instead."""
