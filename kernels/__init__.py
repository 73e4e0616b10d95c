"""Numba kernels of insmix_fast, installed as ``insmix_fast.kernels``."""
