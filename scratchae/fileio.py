"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file.

The data goes to a temporary file in the destination's directory, which is
renamed over the destination only once it is complete. ``os.replace`` is
atomic on one file system, so readers see either the old file or the new
one, never a mix.
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, suffix=""):
    """Open a temporary file that becomes ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        The destination; its directory is created if needed.
    suffix : str
        Ending of the temporary name (some writers look at it, e.g. ".png").

    Yields
    ------
    file
        A binary file object open for writing (its ``.name`` is the
        temporary path, to re-read it for a check before the rename).
        If the block raises, even ``KeyboardInterrupt``, the temporary
        file is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                      suffix=suffix + ".part", delete=False)
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            yield tmp
        os.chmod(tmp_path, 0o644)  # temporary files are created private (0600)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
