"""The loops that NumPy cannot vectorise well, each beside a readable NumPy reference.

- :mod:`.im2col`  -- im2col / col2im, which turn a convolution into a matrix product;
- :mod:`.pooling` -- max-pooling forward (with argmax) and backward;
- :mod:`.bias_relu_pool` -- what follows a convolution (bias, ReLU, max-pool) fused, both ways;
- :mod:`.batchnorm_relu_pool` -- the same when BatchNormalization comes between the convolution
  and its ReLU: its statistics, then normalisation, ReLU and max-pool in one pass, both ways;
- :mod:`.winograd` -- a 3×3 convolution with its bias, ReLU and 2×2 max-pool by Winograd's F(2×2, 3×3);
- :mod:`.winograd_conv` -- the same tiles computing the whole convolution (z written), for the
  BatchNormalization block;
- :mod:`.dropout` -- Dropout's mask, the layer's Philox numbers computed where they are applied;
- :mod:`.cross_entropy` -- the loss, softmax and cross-entropy, in one kernel each way;
- :mod:`.adam`    -- Adam's update in one pass, which can check without writing or keep what it
  overwrites, and (for the GPU) one update of every parameter at once, with a sticky flag that
  stops writing after a bad step;
- :mod:`.affine`  -- warping images (rotation, shift) by bilinear interpolation, and its adjoint;
- :mod:`.geometry` -- a sliding window's output size and "same" padding, for im2col, pooling and
  cuda, and the shape check every wrapper makes before a kernel indexes its arrays;
- :mod:`.cuda`    -- the same kernels in CUDA C, for CuPy arrays;
- :mod:`.jit`     -- how the Numba versions are compiled and cached.
"""
