"""Answers to the blanks of examples/notebooks/4_exercises.ipynb, keyed by each blank's marker
(``# YOUR CODE HERE (dense_backward)``). tests/test_notebooks.py writes them into the blanks and
runs the notebook: with SOLUTIONS every check says "Correct"; with MISTAKES (a learner's usual
slips, one per blank) every check but one says "Not yet" and names what is wrong.

Each value is the body of ``backward(self, dout)``, written without indentation.
"""

SOLUTIONS = {
    "dense_backward": '''
self.grads["kernel"] = self.x.T @ dout          # (D_in, D_out)
self.grads["bias"] = dout.sum(axis=0)           # (D_out,)
return dout @ self.params["kernel"].T           # (N, D_in)
''',
    # The loop a learner writes first: each window hands dout / count to each of its pixels.
    "average_pooling_backward": '''
(ph, pw), (sh, sw), (pt, pb, pl, pr) = self.pool_size, self.strides, self.pad
oh_count, ow_count = self.out_hw
h, w, c = self.input_shape
dx = np.zeros((dout.shape[0], h, w, c), dtype=dout.dtype)
for oh in range(oh_count):
    for ow in range(ow_count):
        top, left = oh * sh - pt, ow * sw - pl
        rows = slice(max(top, 0), min(top + ph, h))
        cols = slice(max(left, 0), min(left + pw, w))
        dx[:, rows, cols, :] += (dout[:, oh, ow, :] / self.count[oh, ow])[:, None, None, :]
return dx
''',
    "conv2d_backward": '''
kh, kw = self.kernel_size
kernel = self.params["kernel"]
dz = dout.reshape(-1, self.filters)                                   # (N*OH*OW, F)
self.grads["kernel"] = (self.cols.T @ dz).reshape(kernel.shape)       # (KH, KW, C, F)
self.grads["bias"] = dz.sum(axis=0)                                   # (F,)
dcols = dz @ kernel.reshape(-1, self.filters).T                       # (N*OH*OW, KH*KW*C)
return col2im(dcols, self.x_shape, kh, kw, self.strides, self.pad)
''',
}


def slip(blank, right, wrong):
    """SOLUTIONS[blank] with its one occurrence of ``right`` written ``wrong``: a mistake that is
    the answer but for one slip."""
    assert SOLUTIONS[blank].count(right) == 1, (blank, right)
    return SOLUTIONS[blank].replace(right, wrong)


#: blank: (its body, the verdicts its check cell must print: a prefix and a phrase of each).
MISTAKES = {
    "dense_backward": ('''
self.grads["kernel"] = self.x.T @ dout
self.grads["bias"] = dout.sum(axis=0)
dx = dout @ self.params["kernel"].T             # computed, but never returned
''', [("Not yet", "backward returned None")]),
    # Dividing by the full window, PH*PW, is right where no window overlaps the padding only.
    "average_pooling_backward": (slip("average_pooling_backward", "/ self.count[oh, ow]", "/ (ph * pw)"),
                                 [("Correct", "padding='valid'"), ("Not yet", "dL/dx is wrong")]),
    "conv2d_backward": (slip("conv2d_backward", 'self.grads["kernel"]', 'self.grads["kernal"]'),   # a misspelt key
                        [("Not yet", "missing ['kernel']; not parameters: ['kernal']")] * 2),
}
