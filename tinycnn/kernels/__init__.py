"""The loops that NumPy cannot vectorise well, each beside a readable NumPy reference.

- :mod:`.im2col`  -- im2col / col2im, which turn a convolution into a matrix product;
- :mod:`.pooling` -- max-pooling forward (with argmax) and backward;
- :mod:`.jit`     -- how the Numba versions are compiled and cached.
"""
