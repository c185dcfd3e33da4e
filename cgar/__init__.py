"""cgar: Curriculum-Guided Adaptive Recursion (CGAR) on Tiny Recursive Models, for Sudoku-Extreme."""

__version__ = "0.1.0"
