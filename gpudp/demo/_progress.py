"""The demos' progress bars: :mod:`tqdm` on stderr, silent when stderr is not a terminal (logs, CI, pipes)."""
from __future__ import annotations

import sys

from tqdm import tqdm


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress(tqdm):
    """``with Progress(total, "label") as bar: ... bar.update(loss=...)``: a :class:`tqdm.tqdm` whose
    ``update`` also takes the fields to show after the bar (``loss=1.2e-3``). Disabled when ``quiet`` or when
    the stream (default stderr) is not a terminal."""

    def __init__(self, total, label="", quiet=False, stream=None):
        stream = stream if stream is not None else sys.stderr
        super().__init__(total=total, desc=label, file=stream, disable=bool(quiet) or not _is_terminal(stream),
                         mininterval=0.1, dynamic_ncols=True)

    def update(self, n=1, **fields):
        if fields and not self.disable:
            self.set_postfix({k: (f"{v:.3e}" if isinstance(v, float) else v) for k, v in fields.items()},
                             refresh=False)
        return super().update(n)
