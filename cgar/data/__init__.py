"""Sudoku-Extreme data: generate, import, split, build, check (`python -m cgar.data --help`)."""
