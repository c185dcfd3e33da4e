"""Sudoku core: grid encoding and validity, the numba solver and rater, symmetries, canonical forms, generator."""
