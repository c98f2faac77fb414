"""Checkpoints: a model's weights, and everything needed to resume training, in one ``.npz``.

A checkpoint is a NumPy ``.npz`` archive of named host arrays:

* ``__architecture__``: the model's :meth:`~scratchae.models.Sequential.architecture`
  string, so that loading into another architecture fails with a clear
  message instead of a shape error deep inside a layer;
* one array per parameter, keyed like ``model.params`` (``"0.W"``, ``"0.b"``...);
* for a training checkpoint, ``train/...`` arrays: the loop's position and
  history as JSON (``train/meta``), the epoch's shuffled order
  (``train/perm``), Adam's moments (``train/adam_m.<i>``, ``train/adam_v.<i>``)
  and, when the trainer keeps its best epoch, that epoch's parameters
  (``train/best.<i>``).

Whichever path trained a model (the textbook layers or :mod:`scratchae.fast`,
which share the same parameter arrays), the checkpoint is the same.

Files are written atomically (temp file + ``os.replace``), and everything
is read and checked before anything is changed: a bad file raises
``ValueError`` (or ``FileNotFoundError``) and leaves the model, the
optimizer and the loop as they were.
"""

import json
import os
import zipfile
import zlib

import numpy as np

from . import backend
from .fileio import atomic_write
from .validate import nonfinite_summary

ARCHITECTURE = "__architecture__"
TRAIN_PREFIX = "train/"  # keys that hold training state, not weights


# --------------------------------------------------------------------------
# .npz files
# --------------------------------------------------------------------------
def save_npz(path, arrays):
    """Save a dict of arrays to ``path`` atomically (temp file + ``os.replace``)."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path):
    """Read every array of an ``.npz`` file into a dict, with clear errors.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (or is a directory).
    ValueError
        If it is not a complete ``.npz`` archive: another kind of file
        (e.g. a single ``.npy`` array or text), a truncated or corrupt one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"{path}: is a directory, not an .npz checkpoint")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        # Our own file object, closed by the "with" even when np.load fails
        # half-way (np.load would leak the handle it opened itself).
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {type(data).__name__}, "
                                 f"not an archive of named arrays")
            with data:
                return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as error:
        reason = str(error) or type(error).__name__
        raise ValueError(f"{path}: not a readable .npz checkpoint ({reason}); "
                         f"it may be truncated or not a checkpoint at all") from None


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------
def weights(model):
    """The model's parameters as host NumPy arrays, keyed like ``model.params``."""
    return {k: backend.to_numpy(v) for k, v in model.params.items()}


def check_weights(model, arrays, source="checkpoint"):
    """Raise ``ValueError`` unless ``arrays`` fit the model's parameters; changes nothing."""
    params = model.params
    missing = sorted(set(params) - set(arrays))
    extra = sorted(set(arrays) - set(params))
    if missing or extra:
        raise ValueError(
            f"{source} does not match this model ({model.name}): missing "
            f"{', '.join(missing) or 'nothing'}, unexpected {', '.join(extra) or 'nothing'}"
        )
    for k, p in params.items():
        a = arrays[k]
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(
                f"{source} does not match this model ({model.name}): parameter {k} has "
                f"shape {tuple(a.shape)}, expected {tuple(p.shape)}"
            )
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{source}: parameter {k} has dtype {a.dtype}, expected numbers")
        problem = nonfinite_summary(a)
        if problem is not None:
            raise ValueError(f"{source}: parameter {k} is not finite ({problem}); "
                             f"the checkpoint is damaged")


def set_weights(model, arrays, source="checkpoint"):
    """Copy host arrays (keyed like ``params``) into the parameters, in place.

    Checks every key, shape, dtype and value first, so a mismatch changes
    nothing. Each parameter is written with its own array library (a GPU
    parameter receives an upload, whatever the current backend is).
    """
    check_weights(model, arrays, source)
    _copy_weights(model, arrays)


def _copy_weights(model, arrays):
    """Write checked host arrays into the parameters, each with its own array library."""
    for k, p in model.params.items():
        p[...] = backend.get_array_module(p).asarray(arrays[k], dtype=p.dtype)


def read_weights(model, path, arrays=None):
    """Read and check the weights in ``path`` for ``model``; changes nothing.

    Parameters
    ----------
    model : Sequential or VAE
    path : str or Path
    arrays : dict of str to ndarray, optional
        The file's contents, if :func:`load_npz` has already read them
        (they are not read again).

    Returns
    -------
    dict of str to ndarray
        The weight arrays (host NumPy), keyed like ``model.params``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a readable ``.npz`` or does not fit this model.
    """
    if arrays is None:
        arrays = load_npz(path)
    arrays = {k: v for k, v in arrays.items() if not k.startswith(TRAIN_PREFIX)}
    saved = str(arrays.pop(ARCHITECTURE, ""))
    mine = model.architecture()
    if saved and saved != mine:
        theirs, ours = saved.split("\n"), mine.split("\n")
        i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b),
                 min(len(theirs), len(ours)))
        there = theirs[i] if i < len(theirs) else "missing"
        here = ours[i] if i < len(ours) else "missing"
        raise ValueError(
            f"{path}: checkpoint is of another architecture than this model "
            f"({model.name}): it has {len(theirs)} layers, this model {len(ours)}; "
            f"layer {i} is {there} there but {here} here"
        )
    check_weights(model, arrays, source=str(path))
    return arrays


def save_weights(model, path):
    """Write the model's architecture and weights to ``path``, atomically."""
    save_npz(path, {ARCHITECTURE: np.array(model.architecture()), **weights(model)})


def load_weights(model, path, arrays=None):
    """Load weights saved by :func:`save_weights` or :func:`save_training` into ``model``.

    ``arrays``: the file's contents, if :func:`load_npz` has already read them.
    """
    _copy_weights(model, read_weights(model, path, arrays))  # read_weights checked them


# --------------------------------------------------------------------------
# training state
# --------------------------------------------------------------------------
def save_training(trainer, path):
    """Write the weights and the state of ``trainer`` (a ``Trainer``) to ``path``, atomically."""
    meta = {
        "epoch": trainer.epoch, "step": trainer.batch, "loss_sum": trainer.loss_sum,
        "seed": trainer.seed, "batch_size": trainer.batch_size, "history": trainer.history,
        "shuffle_rng": trainer.shuffle_rng.bit_generator.state,
        "noise_rng": trainer.noise_rng.bit_generator.state,
        "noise": noise_name(trainer.noise),
    }
    model_rng = getattr(trainer.model, "rng", None)  # e.g. a VAE's sampler
    if model_rng is not None:
        meta["model_rng"] = model_rng.bit_generator.state
    opt = trainer.optimizer.state_dict()
    meta["adam_t"], meta["lr"] = opt["t"], opt["lr"]
    best = trainer.best
    if best is not None:
        meta["best_epoch"], meta["best_value"] = best["epoch"], best["value"]
    arrays = {TRAIN_PREFIX + "meta": np.array(json.dumps(meta))}
    for i, p in enumerate(best["params"] if best is not None else []):
        arrays[f"{TRAIN_PREFIX}best.{i}"] = backend.to_numpy(p)
    if trainer.perm is not None:
        arrays[TRAIN_PREFIX + "perm"] = backend.to_numpy(trainer.perm)
    for i, (m, v) in enumerate(zip(opt["m"], opt["v"])):
        arrays[f"{TRAIN_PREFIX}adam_m.{i}"] = backend.to_numpy(m)
        arrays[f"{TRAIN_PREFIX}adam_v.{i}"] = backend.to_numpy(v)
    save_npz(path, {ARCHITECTURE: np.array(trainer.model.architecture()),
                    **weights(trainer.model), **arrays})


def read_meta(path):
    """The training state saved in a checkpoint, as a dict (``{}`` if it holds none):
    ``"history"``, ``"noise"`` (:func:`noise_name`), ``"epoch"``...

    For figures that compare runs: e.g. ``read_meta(path)["noise"]``.
    """
    meta = load_npz(path).get(TRAIN_PREFIX + "meta")
    if meta is None:
        return {}
    try:
        return dict(json.loads(str(meta)))
    except (ValueError, TypeError):
        raise ValueError(f"{path}: damaged training state") from None


def read_history(path):
    """The per-epoch history saved in a training checkpoint (``{}`` if it holds none).

    For figures that compare runs: e.g. ``read_history(path)["error"]``.
    """
    meta = read_meta(path)
    if not meta:
        return {}
    try:
        return dict(meta["history"])
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"{path}: damaged training state (history)") from None


def noise_name(noise):
    """How a checkpoint names a trainer's noise: ``"mask(0.1)"``, ``"none"``."""
    return "none" if noise is None else getattr(noise, "__name__", repr(noise))


def _rng(state):
    """A Generator in ``state`` (raises ``ValueError``/``TypeError``/``KeyError`` if damaged)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def resume_training(trainer, path):
    """Load a checkpoint written by :func:`save_training` into ``trainer`` and its model.

    Everything is read and checked before anything is changed: on an
    error the model, the optimizer and the loop are left as they were.

    Returns
    -------
    dict
        The checkpoint's loop state (``epoch``, ``step``, ``history``...).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a readable checkpoint of this model, holds no
        training state (weights only), or was trained with another batch
        size or seed.
    """
    arrays = load_npz(path)
    weights_found = read_weights(trainer.model, path, arrays)  # checks architecture and shapes
    if TRAIN_PREFIX + "meta" not in arrays:
        raise ValueError(f"{path}: holds weights but no training state, so it cannot be resumed")
    model_rng = getattr(trainer.model, "rng", None)
    try:
        meta = json.loads(str(arrays[TRAIN_PREFIX + "meta"]))
        epoch, step, loss_sum = int(meta["epoch"]), int(meta["step"]), float(meta["loss_sum"])
        batch_size, seed, history = meta["batch_size"], meta["seed"], meta["history"]
        adam_t = meta["adam_t"]
        if isinstance(seed, list):  # a (seed, stage) key, a list once through JSON
            seed = tuple(seed)
        best_epoch, best_value = meta.get("best_epoch"), meta.get("best_value")
        rngs = [_rng(meta["shuffle_rng"]), _rng(meta["noise_rng"])]  # tried on spares first
        if model_rng is not None:
            rngs.append(_rng(meta["model_rng"]))
        if not (set(trainer.history) <= set(history) and epoch >= 0 and step >= 0):
            raise ValueError("inconsistent loop state")
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: damaged training state ({error or type(error).__name__}), "
                         f"cannot resume") from None
    if batch_size != trainer.batch_size:
        raise ValueError(f"{path}: was trained with batch size {batch_size}, "
                         f"got {trainer.batch_size}; resume with --batch-size {batch_size}")
    saved_noise = meta.get("noise", noise_name(trainer.noise))  # older checkpoints: unchecked
    if saved_noise != noise_name(trainer.noise):
        raise ValueError(f"{path}: was trained with noise {saved_noise}, got "
                         f"{noise_name(trainer.noise)}; resume with the same noise flags")
    if seed != trainer.seed:
        flag = seed if isinstance(seed, int) else seed[0]
        raise ValueError(f"{path}: was trained with seed {seed}, got {trainer.seed}; "
                         f"resume with --seed {flag}")
    count = len(trainer.optimizer.m)
    keys = [f"{TRAIN_PREFIX}adam_{m}.{i}" for m in "mv" for i in range(count)]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path}: damaged training state (lacks {', '.join(missing[:3])}), "
                         f"cannot resume")
    best = None
    if best_epoch is not None:
        kept = [arrays.get(f"{TRAIN_PREFIX}best.{i}") for i in range(count)]
        if any(a is None or a.shape != tuple(p.shape)
               for a, p in zip(kept, trainer.model.parameters())):
            raise ValueError(f"{path}: damaged training state (the best epoch's parameters), "
                             f"cannot resume")
        best = {"epoch": int(best_epoch), "value": float(best_value),
                "params": [backend.get_array_module(p).asarray(a, dtype=p.dtype)
                           for a, p in zip(kept, trainer.model.parameters())]}
    perm = arrays.get(TRAIN_PREFIX + "perm")
    if perm is not None and (perm.ndim != 1 or not np.issubdtype(perm.dtype, np.integer)):
        raise ValueError(f"{path}: damaged training state (bad shuffling order), cannot resume")
    # All checked: from here on nothing can fail half-way.
    trainer.optimizer.load_state_dict({  # checks the moments' shapes before changing anything
        "t": adam_t, "lr": trainer.optimizer.lr,
        "m": [arrays[f"{TRAIN_PREFIX}adam_m.{i}"] for i in range(count)],
        "v": [arrays[f"{TRAIN_PREFIX}adam_v.{i}"] for i in range(count)],
    })
    _copy_weights(trainer.model, weights_found)  # checked by read_weights
    trainer.epoch, trainer.batch, trainer.loss_sum = epoch, step, loss_sum
    trainer.history = history
    trainer.shuffle_rng, trainer.noise_rng = rngs[:2]
    if model_rng is not None:
        trainer.model.rng.bit_generator.state = rngs[2].bit_generator.state
    trainer.perm = perm
    trainer.best = best
    return meta
