"""model.summary(): shapes, parameters, multiply-adds and memory from the layers' own logic."""
import math
from pathlib import Path

import numpy as np
import pytest

from scratchae import fast
from scratchae.layers import Conv2D, ConvTranspose2D, Dense, Flatten, MaxPool2D, ReLU, Reshape
from scratchae.models import Sequential, conv_denoiser, dense_autoencoder
from scratchae.sdae import StackedDenoisingAutoencoder
from scratchae.sparse import sparse_autoencoder
from scratchae.summary import Summary
from scratchae.vae import VAE, conv_vae, vae

ROOT = Path(__file__).resolve().parents[1]


def count(model):
    """Parameters counted from ``parameters()``, not from the summary."""
    return sum(int(np.prod(p.shape)) for p in model.parameters())


@pytest.mark.parametrize("build", [
    conv_denoiser, dense_autoencoder, sparse_autoencoder, vae, conv_vae,
    lambda: conv_vae(latent=20), lambda: fast.compile(conv_denoiser()),
    lambda: fast.compile(conv_vae()),
    lambda: StackedDenoisingAutoencoder((30, 20)).autoencoder(0),
    lambda: StackedDenoisingAutoencoder((30, 20)).classifier,
], ids=["conv_denoiser", "dense_autoencoder", "sparse_autoencoder", "vae", "conv_vae",
        "conv_vae_20", "compiled_conv_denoiser", "compiled_conv_vae", "tied_autoencoder",
        "sdae_classifier"])
def test_totals_match_the_parameters(build):
    model = build()
    summary = model.summary()
    assert isinstance(summary, Summary)
    assert summary.total_params == count(model)
    assert summary.param_bytes == count(model) * 4
    assert summary.total_macs == sum(row.macs for row in summary.rows) > 0
    assert summary.activation_bytes == 4 * sum(math.prod(r.output_shape) for r in summary.rows)


def test_the_conv_denoiser_has_121_281_parameters():
    summary = conv_denoiser().summary()
    assert summary.total_params == 121_281
    text = str(summary)
    assert "total" in text and "121,281" in text
    assert "parameters: 121,281 (473.8 KiB as float32)" in text
    assert summary.rows[16].output_shape == (64, 28, 28)
    assert summary.rows[-1].output_shape == (1, 28, 28)


def test_conv_macs_are_the_formula():
    # N*OH*OW * KH*KW*C * O: one multiply-add per weight per output pixel
    layer = Conv2D(3, 5, (3, 2), stride=(2, 3), padding="same", seed=0)
    assert layer.output_shape((4, 3, 9, 8)) == (4, 5, 5, 3)
    assert layer.macs((4, 3, 9, 8)) == 4 * 5 * 3 * (3 * 2 * 3) * 5
    summary = Sequential([layer]).summary((3, 9, 8))
    assert summary.rows[0].macs == 5 * 3 * 18 * 5 and summary.rows[0].params == 5 * 18 + 5


def test_dense_macs_are_the_formula():
    layer = Dense(784, 64, seed=0)
    assert layer.macs((7, 784)) == 7 * 784 * 64
    assert Sequential([layer]).summary((784,)).rows[0].macs == 784 * 64


def test_transposed_conv_macs_count_every_kernel_copy():
    # N*H*W * C*KH*KW*O: every input pixel's kernel copy, its cropped parts too
    layer = ConvTranspose2D(4, 3, 3, stride=2, padding=1, output_padding=1, seed=0)
    assert layer.macs((2, 4, 7, 7)) == 2 * 7 * 7 * 4 * 9 * 3


def test_elementwise_and_shape_layers_count_no_macs():
    for layer, shape in ((ReLU(), (2, 5)), (MaxPool2D(2), (2, 3, 4, 4)), (Flatten(), (2, 3, 4)),
                         (Reshape((2, 3)), (2, 6))):
        assert layer.macs(shape) == 0


def test_each_row():
    summary = dense_autoencoder(hidden=32).summary()
    assert [row.name for row in summary.rows] == ["0 Flatten", "1 Dense", "2 ReLU", "3 Dense",
                                                 "4 Reshape"]
    assert [row.output_shape for row in summary.rows] == [(784,), (32,), (32,), (784,),
                                                         (1, 28, 28)]
    assert [row.params for row in summary.rows] == [0, 784 * 32 + 32, 0, 32 * 784 + 784, 0]
    assert [row.activation_bytes for row in summary.rows] == [3136, 128, 128, 3136, 3136]
    assert all(row.rule is None for row in summary.rows)
    assert summary.input_shape == (1, 28, 28)
    double = dense_autoencoder(hidden=32, dtype=np.float64).summary()
    assert double.activation_bytes == 2 * summary.activation_bytes
    assert "float64" in str(double).splitlines()[0]


def test_another_input_shape():
    model = Sequential([Conv2D(1, 4, 3, stride=2, padding=1, seed=0), ReLU(), Flatten()])
    summary = model.summary((1, 10, 12))
    assert summary.rows[-1].output_shape == (4 * 5 * 6,)
    assert model.summary([1, 28, 28]).rows[0].output_shape == (4, 14, 14)


def test_compiled_models_name_each_layer_s_rule():
    rules = [row.rule for row in fast.compile(conv_denoiser()).summary().rows]
    assert rules == ["conv_pool (no dx)", "fused_relu", "conv_pool (no dx)", "conv", "relu_pool",
                     "relu_pool",
                     "conv", "relu_pool", "relu_pool", "upsample", "conv", "fused_relu",
                     "subpixel", "subpixel", "fused_relu", "subpixel", "subpixel",
                     "fused_relu", "conv"]
    summary = fast.compile(conv_vae()).summary()
    assert [row.rule for row in summary.rows] == [
        "strided_conv (no dx)", "fused_relu", "strided_conv", "fused_relu", "reshape", "dense",
        "fused_relu", "dense", None,  # the sampler
        "dense", "fused_relu", "reshape", "subpixel_transposed", "fused_relu",
        "subpixel_transposed", "fused_relu", "transposed_stride1"]
    assert str(summary).splitlines()[1].rstrip().endswith("fast rule")
    sdae = fast.compile(StackedDenoisingAutoencoder((30, 20)).classifier).summary()
    assert [row.rule for row in sdae.rows] == [
        "reshape", "dense (no dx)", "fused_sigmoid", "dense", "fused_sigmoid", "dense"]
    textbook = fast.compile(conv_denoiser(), rules=()).summary()
    assert {row.rule for row in textbook.rows} == {"textbook", "textbook (no dx)"}


def _forward_error(model, shape):
    with pytest.raises((ValueError, TypeError)) as forward:
        model.forward(np.zeros((1, *shape), dtype=np.float32))
    return forward


@pytest.mark.parametrize("model, shape", [
    (conv_denoiser(), (3, 28, 28)),                                   # the model's own check
    (Sequential([Conv2D(1, 4, 3), MaxPool2D(2), Flatten(), Dense(100, 3)]), (1, 28, 28)),
    (Sequential([Conv2D(1, 4, 5, padding="valid")]), (1, 3, 3)),      # smaller than the kernel
    (Sequential([Conv2D(2, 4, 3)]), (1, 8, 8)),                       # channels
    (Sequential([Flatten(), Reshape((1, 5, 5))]), (1, 4, 4)),         # 16 values, not 25
    (Sequential([Dense(5, 3)]), (2, 5)),                              # 3-D into a Dense
    (conv_vae(), (1, 27, 28)),
    (fast.compile(conv_denoiser()), (1, 28, 29)),
], ids=["model", "dense", "kernel", "channels", "reshape", "ndim", "vae", "compiled"])
def test_a_shape_the_model_cannot_take_gets_forward_s_error(model, shape):
    forward = _forward_error(model, shape)
    with pytest.raises(forward.type) as summary:
        model.summary(shape)
    assert str(summary.value) == str(forward.value)


def test_a_vae_whose_encoder_gives_the_wrong_heads():
    good = vae(latent=3, hidden=8)
    model = VAE(good.encoder, good.decoder, latent=4)  # the encoder gives 6 outputs, not 8
    forward = _forward_error(model, (1, 28, 28))
    with pytest.raises(ValueError) as summary:
        model.summary()
    assert str(summary.value) == str(forward.value) == (
        "vae: the encoder must output (N, 8) (mu and logvar), got (1, 6)")


def test_bad_summary_arguments():
    with pytest.raises(ValueError, match=r"Sequential: summary\(\) needs an input shape"):
        Sequential([Dense(3, 4)]).summary()
    for bad in ((3.5,), (0, 4), "abc", 5):
        with pytest.raises(ValueError, match="summary's input_shape must be one sample's shape"):
            Sequential([Dense(3, 4)]).summary(bad)


def test_the_readme_shows_the_current_summary():
    """The README quickstart's printout is what conv_denoiser().summary() prints."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(">>> print(conv_denoiser().summary())\n") + len(
        ">>> print(conv_denoiser().summary())\n")
    shown = readme[start:readme.index("```", start)].rstrip("\n")
    assert shown == str(conv_denoiser().summary())


def test_a_tied_weight_is_counted_once():
    """The tied decoder's row counts its own bias only; the multiply-adds count both uses."""
    rows = StackedDenoisingAutoencoder((30, 20)).autoencoder(0).summary().rows
    assert [(row.params, row.macs) for row in rows] == [
        (0, 0), (784 * 30 + 30, 784 * 30), (0, 0), (784, 30 * 784), (0, 0)]  # Flatten...Reshape
