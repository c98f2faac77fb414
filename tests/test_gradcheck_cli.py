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
