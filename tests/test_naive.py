"""The naive loops of scratchae.naive against Conv2D (im2col + GEMM): the same numbers.

Small awkward shapes (stride 2, asymmetric 'same' padding, non-square
kernels, odd sizes, fewer output than input channels), float64: the
output, dx, dW and db. Plus the worked 4x4 example of docs/backprop.md §3,
whose numbers the docs print.
"""

import numpy as np
import pytest

from scratchae.layers import Conv2D
from scratchae.naive import conv2d_backward, conv2d_forward

from conftest import to_np, to_xp


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, shape", [
    (2, 3, (3, 3), (1, 1), "same", (5, 7)),
    (3, 2, (3, 2), (2, 2), "same", (7, 6)),   # asymmetric padding: the odd pixel at the bottom
    (2, 3, (2, 3), (2, 1), 1, (5, 5)),
    (1, 2, (3, 3), (2, 2), "valid", (7, 5)),
    (3, 1, (1, 4), (1, 3), 2, (3, 8)),
])
def test_naive_loops_equal_conv2d(backend, cin, cout, kernel, stride, padding, shape):
    rng = np.random.default_rng(0)
    layer = Conv2D(cin, cout, kernel, stride=stride, padding=padding, dtype=np.float64, seed=1)
    W = to_np(layer.params["W"])
    b = rng.standard_normal(cout)
    layer.params["b"][...] = to_xp(b)
    x = rng.standard_normal((2, cin, *shape))

    y = to_np(layer.forward(to_xp(x)))
    np.testing.assert_allclose(conv2d_forward(x, W, b, stride, padding), y, rtol=1e-12, atol=1e-12)

    dout = rng.standard_normal(y.shape)
    dx = to_np(layer.backward(to_xp(dout)))
    dx_naive, dW_naive, db_naive = conv2d_backward(dout, x, W, stride, padding)
    for name, naive, layer_grad in (("dx", dx_naive, dx),
                                    ("dW", dW_naive, to_np(layer.grads["W"])),
                                    ("db", db_naive, to_np(layer.grads["b"]))):
        assert naive.shape == layer_grad.shape, name
        np.testing.assert_allclose(naive, layer_grad, rtol=1e-12, atol=1e-12, err_msg=name)


def test_worked_example_of_the_docs():
    """docs/backprop.md §3: a 4x4 input, a 3x3 kernel, 'valid', dout = [[1, 2], [3, 4]]."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    W = np.arange(9.0).reshape(1, 1, 3, 3)
    dout = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(conv2d_forward(x, W, np.zeros(1))[0, 0],
                                  [[258, 294], [402, 438]])
    dx, dW, db = conv2d_backward(dout, x, W)
    np.testing.assert_array_equal(dW[0, 0], [[34, 44, 54], [74, 84, 94], [114, 124, 134]])
    np.testing.assert_array_equal(db, [10])
    np.testing.assert_array_equal(dx[0, 0], [[0, 1, 4, 4], [3, 13, 23, 18],
                                             [15, 43, 53, 36], [18, 45, 52, 32]])
