"""Tests for ``python -m scratchae.gradcheck`` (the ``main`` function and its table)."""
from __future__ import annotations

import numpy as np
import pytest

import scratchae.backend as B
import scratchae.layers
from scratchae import gradcheck
from scratchae.gradcheck import CHECKS, main


def test_list_prints_every_check(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for check in CHECKS:
        assert check.name in out


def test_check_names_are_unique_and_lowercase():
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    assert all(n == n.lower() and " " not in n for n in names)


def test_every_layer_class_has_a_check():
    """A layer added to scratchae.layers without a gradient check fails here."""
    groups = {c.name.split("_")[0] for c in CHECKS}
    for name in scratchae.layers.__all__:
        obj = getattr(scratchae.layers, name)
        layer_class = isinstance(obj, type) and issubclass(obj, scratchae.layers.Layer)
        if layer_class and obj is not scratchae.layers.Layer:
            assert name.lower() in groups, f"no gradcheck entry for {name}"


def test_dense_passes(capsys):
    assert main(["--layer", "dense", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("numpy ")]
    assert [row.split()[3] for row in rows] == ["dx", "W", "b"]
    assert all(row.endswith("PASS") for row in rows)
    assert "models_dense" not in out  # "dense" matches the start of a name only


def test_layer_is_case_insensitive_and_a_prefix(capsys):
    assert main(["--layer", "MaxPool", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "maxpool2d_valid" in out and "maxpool2d_same" in out
    assert "conv2d" not in out


@pytest.mark.parametrize("name", ["nope", "models_x"])
def test_unknown_layer_exits_2(capsys, name):
    assert main(["--layer", name]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line.startswith(f"error: unknown layer '{name}'; choose from: dense, conv2d")
    assert "loss" in line and "models" in line
    assert "\n" not in line


def test_broken_relu_fails(capsys, monkeypatch):
    # The classic bug: forgetting the mask, i.e. passing dout straight through.
    monkeypatch.setattr(scratchae.layers.ReLU, "backward", lambda self, dout: dout)
    assert main(["--layer", "relu", "--backend", "numpy"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "PASS" not in out
    assert "1 FAILED" in out


def test_raising_backward_is_an_error_row(capsys, monkeypatch):
    def backward(self, dout):
        raise ValueError("shapes (2,3) and (4,5) not aligned")

    monkeypatch.setattr(scratchae.layers.Sigmoid, "backward", backward)
    assert main(["--layer", "sigmoid", "--backend", "numpy"]) == 1
    captured = capsys.readouterr()
    assert "ERROR (ValueError: shapes (2,3) and (4,5) not aligned)" in captured.out
    assert "Traceback" in captured.err  # where it broke, for the student


def test_tol_flag(capsys):
    assert main(["--layer", "sigmoid", "--backend", "numpy", "--tol", "1e-30"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_backend_is_restored(capsys):
    B.set_backend("numpy")
    main(["--layer", "flatten"])
    assert B.get_backend() == "numpy"


@pytest.mark.skipif(B.cupy_available(), reason="CuPy is usable here")
def test_unavailable_cupy_exits_2(capsys):
    assert main(["--layer", "dense", "--backend", "cupy"]) == 2
    assert capsys.readouterr().err.startswith("error: backend 'cupy' is not available")


@pytest.mark.parametrize("check", [c for c in CHECKS if not c.name.startswith("models")],
                         ids=lambda c: c.name)
def test_make_input_has_the_check_shape(check):
    x = gradcheck.make_input(check, np.random.default_rng(0))
    assert x.shape == check.shape and x.dtype == np.float64
    if check.inputs == "tie_free":
        assert len(np.unique(x)) == x.size
    if check.inputs == "away_from_zero":
        assert np.abs(x).min() >= 0.1


def test_smaller_step_retry_does_not_hide_a_wrong_gradient(capsys, monkeypatch):
    # models are retried with a smaller step where the first one failed (kinks);
    # a wrong backward must fail at every step
    monkeypatch.setattr(scratchae.layers.ReLU, "backward", lambda self, dout: dout)
    assert main(["--layer", "models_dense", "--backend", "numpy"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out


def test_run_check_reports_error_and_step():
    check = next(c for c in CHECKS if c.name == "dense")
    results = gradcheck.run_check(check, seed=0)
    assert set(results) == {"dx", "W", "b"}
    assert all(err < 1e-6 and eps == check.steps[0] for err, eps in results.values())


# --------------------------------------------------------------------------
# --impl: the reader's own class, against scratchae's
# --------------------------------------------------------------------------

DENSE_IMPLS = '''
import numpy as np

from scratchae.layers import Dense


class Right(Dense):
    def backward(self, dout):
        x = self._cache
        self.grads = {"W": x.T @ dout, "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T


class TimesN(Dense):  # dW scaled by the batch size
    def backward(self, dout):
        x = self._cache
        self.grads = {"W": x.T @ dout * len(x), "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T


class Transposed(Dense):
    def backward(self, dout):
        x = self._cache
        self.grads = {"W": dout.T @ x, "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T


class InPlace(Dense):  # right gradients, but dout is scaled in place
    def backward(self, dout):
        x = self._cache
        self.grads = {"W": x.T @ dout, "b": dout.sum(axis=0)}
        dx = dout @ self.params["W"].T
        dout *= 0.5
        return dx


class Accumulates(Dense):  # right on the first call, then adds
    def backward(self, dout):
        x = self._cache
        self.grads["W"] += x.T @ dout
        self.grads["b"] += dout.sum(axis=0)
        return dout @ self.params["W"].T


class NotSummed(Dense):
    def backward(self, dout):
        self.grads = {"W": self._cache.T @ dout, "b": dout}
        return dout @ self.params["W"].T


class FirstSample(Dense):
    def backward(self, dout):
        self.grads = {"W": self._cache.T @ dout, "b": dout[0]}
        return dout @ self.params["W"].T


class Raises(Dense):
    def backward(self, dout):
        return dout @ self._cache


class OtherInit(Right):  # draws its own weights: the check copies Dense's in
    def __init__(self, d, m, **kwargs):
        super().__init__(d, m, dtype=kwargs["dtype"], seed=99)


class NoArguments(Right):
    def __init__(self):
        super().__init__(6, 4)


def helper():
    pass


class NoBackward:
    def forward(self, x):
        return x
'''


@pytest.fixture
def impls(tmp_path, monkeypatch):
    """The directory with my_layers.py (the Dense variants above) as the working directory."""
    (tmp_path / "my_layers.py").write_text(DENSE_IMPLS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_impl(capsys, *args):
    """main() on ``args``: (exit status, stdout, stderr); the checker never shows its traceback."""
    status = main(list(args))
    out, err = capsys.readouterr()
    assert "gradcheck.py" not in out + err
    return status, out, err


def test_impl_right_dense_passes(impls, capsys):
    status, out, err = run_impl(capsys, "--layer", "dense", "--impl", "my_layers.py:Right")
    assert status == 0 and err == ""
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and "(" in line]
    assert [r[0] for r in rows] == ["y", "dx", "dW", "db"] and all(r[-1] == "PASS" for r in rows)
    assert "backward leaves dout unchanged" in out and "a 2nd backward overwrites grads" in out
    assert "Right: 1 of 1 case passed" in out and "FAIL" not in out


@pytest.mark.parametrize("name, array, words", [
    ("TimesN", "dW", "dW is 3 times Dense's, and 3 is the batch size N"),
    ("Transposed", "dW", "dW is transposed: shape (4,6), it must be (6,4)"),
    ("NotSummed", "db", "db is not summed over the batch: shape (3,4)"),
    ("FirstSample", "db", "db is only the first sample's share"),
])
def test_impl_wrong_gradient_is_caught_and_named(impls, capsys, name, array, words):
    status, out, _ = run_impl(capsys, "--layer", "dense", "--impl", f"my_layers.py:{name}")
    assert status == 1
    verdicts = {line.split()[0]: line.split()[-1] for line in out.splitlines()
                if line.startswith("  d") or line.startswith("  y ")}
    assert verdicts[array] == "FAIL"
    assert all(v == "PASS" for k, v in verdicts.items() if k != array)
    assert words in " ".join(out.split())  # unwrapped
    assert f"{name}: 0 of 1 case passed (failed: dense)" in out


def test_impl_dout_modified_in_place_is_caught(impls, capsys):
    status, out, _ = run_impl(capsys, "--layer", "dense", "--impl", "my_layers.py:InPlace")
    assert status == 1
    assert [line.split()[-1] for line in out.splitlines() if "dout unchanged" in line] == ["FAIL"]
    assert "backward changed dout in place (12 of 12 entries)" in " ".join(out.split())


def test_impl_accumulated_grads_are_caught(impls, capsys):
    status, out, _ = run_impl(capsys, "--layer", "dense", "--impl", "my_layers.py:Accumulates")
    assert status == 1
    assert [line.split()[-1] for line in out.splitlines() if "overwrites grads" in line] == ["FAIL"]
    text = " ".join(out.split())
    assert "dW, db after a second backward are 2x the first" in text and "(+=)" in text


def test_impl_raising_backward_shows_only_the_readers_frames(impls, capsys):
    status, out, err = run_impl(capsys, "--layer", "dense", "--impl", "my_layers.py:Raises")
    assert status == 1 and err == ""
    assert "ERROR  Raises.backward raised ValueError" in out
    assert "Traceback (your code):" in out and "my_layers.py" in out
    assert "return dout @ self._cache" in out


def test_impl_other_initial_weights_are_replaced_and_said(impls, capsys):
    status, out, _ = run_impl(capsys, "--layer", "dense", "--impl", "my_layers.py:OtherInit")
    assert status == 0
    assert "drew other initial values of W than Dense's" in " ".join(out.split())


def test_impl_without_layer_uses_the_class_it_derives_from(impls, capsys):
    status, out, _ = run_impl(capsys, "--impl", "my_layers.py:Right")
    assert status == 0 and "against scratchae's Dense" in out


@pytest.mark.parametrize("args, words", [
    (["--impl", "missing.py:Right"], "error: --impl: the file missing.py does not exist"),
    (["--impl", "my_layers.py"], "error: --impl must be FILE.py:Class"),
    (["--impl", "my_layers.py:Nope"], "error: my_layers.py has no Nope (its classes: Right,"),
    (["--impl", "my_layers.py:helper"], "error: helper in my_layers.py is a function, not a class"),
    (["--impl", "my_layers.py:NoBackward"], "error: NoBackward has no backward method"),
    (["--impl", "broken.py:Right"],
     "error: importing broken.py raised RuntimeError: a bug (broken.py, line 3)"),
    (["--impl", "syntax.py:Right"], "error: syntax.py, line 1: SyntaxError"),
    (["--layer", "nope", "--impl", "my_layers.py:Right"],
     "error: unknown layer 'nope'; choose from: dense, conv2d"),
    (["--layer", "dense", "--impl", "my_layers.py:NoArguments"],
     "error: NoArguments(6, 4, dtype=float64, seed=0) raised TypeError"),
    (["--layer", "models", "--impl", "my_layers.py:Right"],
     "error: --layer models checks whole models, which --impl cannot stand in for"),
    (["--layer", "conv2d", "--impl", "my_layers.py:Right"],
     "error: Right is a Dense, but --layer conv2d checks Conv2D: use --layer dense"),
    (["--layer", "vae", "--impl", "my_layers.py:NoBackward"], "error: NoBackward has no backward"),
])
def test_impl_bad_input_is_one_line_and_exit_2(impls, capsys, args, words):
    (impls / "broken.py").write_text("import numpy\n\nraise RuntimeError('a bug')\n")
    (impls / "syntax.py").write_text("def f(:\n    pass\n")
    status, out, err = run_impl(capsys, *args)
    assert status == 2 and out == ""
    assert err.startswith(words), err
    assert err.count("\n") == 1 and "Traceback" not in err


DUCK = '''
import numpy as np


class Duck:
    def __init__(self, d, m, *, dtype=np.float32, seed=None):
        limit = np.sqrt(6 / (d + m))
        w = np.random.default_rng(seed).uniform(-limit, limit, (d, m))
        self.params = {"W": w.astype(dtype), "b": np.zeros(m, dtype)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads = {"W": self.x.T @ dout * 2, "b": dout.sum(0)}
        return dout @ self.params["W"].T
'''


def test_impl_takes_any_class_with_the_interface(impls, capsys):
    """Not a subclass: its own constructor, params and grads, built with Dense's arguments."""
    (impls / "duck.py").write_text(DUCK)
    status, out, _ = run_impl(capsys, "--layer", "dense", "--impl", "duck.py:Duck")
    assert status == 1
    assert "dW is 2 times Dense's: a factor 1/2 missing?" in out


def test_impl_needs_one_class_when_the_layer_name_matches_several(impls, capsys):
    (impls / "duck.py").write_text(DUCK)
    status, _, err = run_impl(capsys, "--layer", "vae", "--impl", "duck.py:Duck")
    assert status == 2
    assert "--layer vae checks 3 classes; name the one Duck stands in for" in err
    assert "GaussianKL: --layer vae_kl" in err
    status, _, err = run_impl(capsys, "--impl", "duck.py:Duck")
    assert status == 2 and err.startswith("error: --impl Duck needs --layer NAME")


def test_ties_check_runs_only_with_impl(capsys):
    assert main(["--layer", "maxpool2d_ties"]) == 2
    assert "add --impl" in capsys.readouterr().err
    assert main(["--layer", "maxpool", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "maxpool2d_overlap" in out and "maxpool2d_ties" not in out


def test_list_says_what_impl_stands_in_for(capsys):
    main(["--list"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["dense"].endswith("--impl for Dense")
    assert lines["vae_kl"].endswith("--impl for GaussianKL")
    assert lines["models_conv_denoiser"].endswith("a model (no --impl)")
    assert lines["maxpool2d_ties"].endswith("(--impl only: exact ties)")


def test_every_check_builds_its_piece_from_the_table():
    """Each layer row builds its class (with dtype/seed where taken); models build themselves."""
    for check in CHECKS:
        if check.layer is None:
            assert check.build is not None
            continue
        piece = check.make(0)
        assert type(piece) is check.layer
        for p in getattr(piece, "params", {}).values():
            assert p.dtype == np.float64


# Genericity: a check added later is one row. Two stand-ins for what is planned: a softmax
# cross-entropy with integer labels, and a decoder layer that shares an encoder Dense's W.

class ToySoftmaxCE:
    """Mean over the batch of -log softmax(x)[label], from logits (N, C)."""

    def forward(self, logits, labels):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._cache = (np.exp(log_p), labels)
        return -log_p[np.arange(len(labels)), labels].mean()

    def backward(self):
        p, labels = self._cache
        onehot = np.zeros_like(p)
        onehot[np.arange(len(labels)), labels] = 1
        return (p - onehot) / len(p)


class ToyTied:
    """``y = x @ W.T + b`` with the ``W`` (D, M) of an encoder Dense, shared."""

    def __init__(self, encoder, *, dtype=np.float32):
        self.params = {"W": encoder.params["W"], "b": np.zeros(encoder.in_features, dtype)}
        self.grads = {}

    def forward(self, x):
        self._cache = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dout):
        self.grads = {"W": dout.T @ self._cache, "b": dout.sum(axis=0)}
        return dout @ self.params["W"]


SOFTMAX = gradcheck.Check("toy_softmax", ToySoftmaxCE, shape=(4, 5), inputs="logits",
                          targets="labels")
TIED = gradcheck.Check("toy_tied", ToyTied,
                       args=lambda s: (scratchae.layers.Dense(4, 6, dtype=np.float64, seed=s),),
                       shape=(3, 6))


def test_a_new_check_row_works_in_the_table_and_with_impl(capsys):
    for check in (SOFTMAX, TIED):
        assert all(err < 1e-6 for err, _ in gradcheck.run_check(check).values())
        assert gradcheck.check_impl(type("Mine", (check.layer,), {}), [check]) == 0

    class NoMean(ToySoftmaxCE):
        def backward(self):
            return super().backward() * 4

    class TransposedTied(ToyTied):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self._cache.T @ dout
            return dx

    capsys.readouterr()
    assert gradcheck.check_impl(NoMean, [SOFTMAX]) == 1
    assert "dlogits is 4 times ToySoftmaxCE's, and 4 is the batch size N" in capsys.readouterr().out
    assert gradcheck.check_impl(TransposedTied, [TIED]) == 1
    out = capsys.readouterr().out
    assert "TransposedTied(Dense(4, 6), dtype=float64)" in out
    assert "dW is transposed: shape (6,4), it must be (4,6)" in out


def test_make_targets_labels():
    labels = gradcheck.make_targets(SOFTMAX, np.random.default_rng(0))
    assert labels.shape == (4,) and labels.dtype.kind == "i"
    assert labels.min() >= 0 and labels.max() < 5


@pytest.mark.parametrize("layer", ["dense", "maxpool", "loss", "vae_kl", "vae_sampler"])
def test_impl_on_both_backends(backend, capsys, layer):
    """The reader's class (here the layer's own, then one off by a factor of 2) on the backend."""
    check = gradcheck._matching(layer)[0]
    mine = type("Mine", (check.layer,), {})
    checks = gradcheck.impl_checks(mine, layer)
    assert gradcheck.check_impl(mine, checks, backends=(backend,)) == 0

    def doubled(self, *dout):
        grads = check.layer.backward(self, *dout)
        return tuple(2 * g for g in grads) if isinstance(grads, tuple) else 2 * grads

    wrong = type("Wrong", (check.layer,), {"backward": doubled})
    capsys.readouterr()
    assert gradcheck.check_impl(wrong, checks, backends=(backend,)) == 1
    assert "2 times" in capsys.readouterr().out


def test_a_row_in_the_old_form_is_refused_clearly():
    with pytest.raises(ValueError, match="give shape= and exactly one of layer"):
        gradcheck.Check("dense", lambda s: scratchae.layers.Dense(6, 4, seed=s), (3, 6))
    with pytest.raises(TypeError, match="layer must be a class"):
        gradcheck.Check("dense", lambda s: scratchae.layers.Dense(6, 4, seed=s), shape=(3, 6))
