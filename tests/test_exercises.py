"""The exercises (exercises/, docs/exercises.md): each fails the checker as shipped, with one
clear NotImplementedError line, and passes once its backward is the layer's own."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scratchae import gradcheck
from scratchae.gradcheck import check_impl, impl_checks, load_impl, main

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "exercises.md").read_text()

# (file, class, --layer) of every exercise, as docs/exercises.md gives them
EXERCISES = [
    ("ex1_dense.py", "MyDense", "dense"),
    ("ex2_sigmoid_cross_entropy.py", "MySigmoidCrossEntropy", "loss"),
    ("ex3_maxpool.py", "MyMaxPool2D", "maxpool"),
    ("ex4_conv2d.py", "MyConv2D", "conv2d"),
    ("ex5_vae.py", "MyGaussianSampler", "vae_sampler"),
    ("ex5_vae.py", "MyGaussianKL", "vae_kl"),
]
IDS = [name for _, name, _ in EXERCISES]


def spec(file, name):
    return f"{ROOT / 'exercises' / file}:{name}"


@pytest.mark.parametrize("file, name, layer", EXERCISES, ids=IDS)
def test_exercise_fails_as_shipped_with_one_line_per_case(capsys, file, name, layer):
    assert main(["--layer", layer, "--impl", spec(file, name)]) == 1
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    cases = impl_checks(load_impl(spec(file, name)), layer)
    text = " ".join(out.split())  # long lines are wrapped
    line = f"NOT WRITTEN {name}.backward raises NotImplementedError ({ROOT / 'exercises' / file}"
    assert text.count(line) == text.count("NOT WRITTEN") == len(cases)
    assert f"{name}: 0 of {len(cases)} case" in text and "not written yet:" in text


@pytest.mark.parametrize("file, name, layer", EXERCISES, ids=IDS)
def test_exercise_passes_with_the_layers_own_backward(capsys, monkeypatch, file, name, layer):
    cls = load_impl(spec(file, name))
    (parent,) = cls.__bases__
    monkeypatch.setattr(cls, "backward", parent.backward)
    checks = impl_checks(cls, layer)
    assert {c.layer for c in checks} == {parent}
    assert check_impl(cls, checks) == 0
    out = capsys.readouterr().out
    assert f"{name}: {len(checks)} of {len(checks)} case" in out and "FAIL" not in out


@pytest.mark.parametrize("file, name, layer", EXERCISES, ids=IDS)
def test_exercise_keeps_forward_and_says_what_to_compute(file, name, layer):
    cls = load_impl(spec(file, name))
    assert "forward" not in vars(cls) and "backward" in vars(cls)
    assert "shape" in cls.backward.__doc__ or "(N, K)" in cls.backward.__doc__
    source = (ROOT / "exercises" / file).read_text()
    assert f"--layer {layer} --impl exercises/{file}:{name}" in " ".join(
        source.replace("\\\n", " ").split())


def test_docs_commands_are_the_exercises():
    """Every command in docs/exercises.md runs an exercise that exists, with its own layer."""
    commands = re.findall(r"^python -m scratchae\.gradcheck (--layer .*)$", DOC, flags=re.M)
    found = []
    for command in commands:
        args = shlex.split(command)
        layer, impl = args[args.index("--layer") + 1], args[args.index("--impl") + 1]
        if not impl.startswith("exercises/"):
            continue
        file, _, name = impl.partition("/")[2].partition(":")
        found.append((file, name, layer))
        cls = load_impl(spec(file, name))
        assert {c.layer for c in impl_checks(cls, layer)} == set(cls.__bases__)
    assert set(found) == set(EXERCISES)


def test_docs_link_each_solution():
    for path in ["scratchae/layers/dense.py", "scratchae/losses.py", "scratchae/layers/pool.py",
                 "scratchae/layers/conv.py", "scratchae/layers/gaussian.py"]:
        assert f"(../{path})" in DOC and (ROOT / path).is_file()


def _code_blocks(doc):
    """The fenced blocks of a Markdown text, in order (their text, without the fences)."""
    blocks, current = [], None
    for line in doc.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _normalised(text):
    """Output with the numbers that depend on rounding (1.3e-10) replaced."""
    return re.sub(r"\d\.\de[-+]\d\d", "E", text).strip()


def test_docs_sample_outputs_are_what_the_checker_prints(tmp_path, monkeypatch, capsys):
    blocks = _code_blocks(DOC)
    wrong = next(b for b in blocks if b.startswith("$ python -m scratchae.gradcheck"))
    command, expected = wrong.split("\n", 1)
    (tmp_path / "my_dense.py").write_text(
        "from scratchae.layers import Dense\n\n\n"
        "class MyDense(Dense):\n"
        "    def backward(self, dout):\n"
        "        x = self._cache\n"
        "        self.grads = {'W': x.T @ dout * len(x), 'b': dout.sum(axis=0)}\n"
        "        return dout @ self.params['W'].T\n")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[4:]) == 1
    assert _normalised(capsys.readouterr().out) == _normalised(expected)

    shipped = next(b for b in blocks if "NOT WRITTEN" in b)
    monkeypatch.chdir(ROOT)
    main(["--layer", "dense", "--impl", "exercises/ex1_dense.py:MyDense"])
    assert _normalised(shipped) in _normalised(capsys.readouterr().out)


def test_exercise_files_are_not_in_the_package():
    assert not (ROOT / "exercises" / "__init__.py").exists()
    assert "exercises" not in gradcheck.__name__
