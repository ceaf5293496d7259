"""Update kernels over flat 1-D buffers: per-element math in ``_math``, loops in ``cpu``."""
