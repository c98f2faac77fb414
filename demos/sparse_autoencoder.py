"""Train UFLDL's sparse autoencoder on MNIST and draw what its hidden units learned.

    python demos/sparse_autoencoder.py                  # beta 10: stroke-like filters
    python demos/sparse_autoencoder.py --beta 0 --out out/beta0   # no sparsity: blurry blobs

784 -> 196 sigmoid units -> 784 logits, trained on the sigmoid
cross-entropy plus a KL sparsity penalty that pushes every hidden unit's
mean activation to rho, plus L2 weight decay (scratchae/layers/sparsity.py,
docs/sparse_autoencoder.md). beta and the weight decay are per image, as in
UFLDL: 10 and 1e-2 by default, because UFLDL's 3 and 3e-3 were tuned for
a squared error, whose gradient is 6-7 times smaller than the
cross-entropy's (measured; see scratchae.sparse.sparse_autoencoder).

Writes to --out (default ./out): sparse_autoencoder_filters.png (each
hidden unit's 784 input weights as a 28x28 tile, 14x14 of them),
sparse_autoencoder.png (test digits over their reconstructions),
sparse_autoencoder_activations.png (each unit's mean activation on the test
set, against rho), sparse_autoencoder_loss.png and the checkpoint
sparse_autoencoder.npz (resume with --resume). Prints the penalty and the
mean hidden activation after every epoch, and ends with
``test bce=... penalty=...+... mean_activation=...``.
"""

import sys
from pathlib import Path

from scratchae import backend, plots
from scratchae.cli import DemoSpec, run_demo
from scratchae.sparse import SparseTrainer, sparse_autoencoder
from scratchae.validate import arg_non_negative_float, arg_positive_int, arg_probability


def mean_activations(model, images, batch_size):
    """Each hidden unit's mean activation over ``images`` (host, (H,))."""
    total = 0.0
    for i in range(0, len(images), batch_size):
        total = total + model.hidden(backend.asarray(images[i:i + batch_size])).sum(axis=0)
    return backend.to_numpy(total) / len(images)


def make_figures(trainer, data, args):
    out, model = Path(args.out), trainer.model
    setting = (f"rho {args.rho:g}, beta {args.beta:g}, weight decay {args.weight_decay:g}, "
               f"{plots.epochs(trainer.epoch)}")
    digits = data.test_images[:10]
    rho_hat = mean_activations(model, data.test_images, trainer.eval_batch_size)
    return [
        plots.filter_grid(backend.to_numpy(model.encoder_weights()),
                          out / "sparse_autoencoder_filters.png",
                          title=f"Encoder filters ({setting})"),
        plots.image_rows([("test digit", digits), ("reconstruction", trainer.predict(digits))],
                         out / "sparse_autoencoder.png",
                         title=f"Sparse autoencoder ({setting})"),
        plots.activation_histogram(rho_hat, args.rho, out / "sparse_autoencoder_activations.png",
                                   title=f"Mean activation of each hidden unit on the test "
                                         f"set ({setting})"),
        plots.loss_curves(trainer.history, out / "sparse_autoencoder_loss.png",
                          title="Sparse autoencoder",
                          ylabel="cross-entropy + penalty (per pixel)"),
    ]


def _extra_args(parser):
    parser.add_argument("--hidden", type=arg_positive_int, default=196,
                        help="hidden units (a square draws a square filter grid)")
    parser.add_argument("--rho", type=arg_probability, default=0.1,
                        help="target mean activation of every hidden unit")
    parser.add_argument("--beta", type=arg_non_negative_float, default=10.0,
                        help="weight of the KL sparsity, per image (0 switches it off)")
    parser.add_argument("--weight-decay", type=arg_non_negative_float, default=1e-2,
                        help="L2 weight decay lambda, per image")


SPEC = DemoSpec(
    name="sparse_autoencoder",
    description="Train UFLDL's sparse autoencoder (KL sparsity + weight decay, gradients by "
                "hand) on MNIST and draw its encoder's filters.",
    build_model=lambda args: sparse_autoencoder(hidden=args.hidden, rho=args.rho,
                                                beta=args.beta, weight_decay=args.weight_decay,
                                                seed=args.seed),
    make_figures=make_figures,
    epochs=10,
    lr=3e-3,
    batch_size=128,
    extra_args=_extra_args,
    trainer=SparseTrainer,
)


def main(argv=None):
    return run_demo(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
