"""Progress bars that suit where they are read: a redrawn bar on a terminal, a line every half minute in
a log (a bar redrawn ten times a second into a file grew ``make demo``'s log to megabytes)."""

from __future__ import annotations

import io
import sys

#: Seconds between progress lines when stderr is not a terminal.
LOG_INTERVAL_S = 30.0


class _LineWriter(io.TextIOBase):
    """Turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; elsewhere the same counts as a plain line at most every
    :data:`LOG_INTERVAL_S` seconds (and one at the end)."""
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)

    class LogBar(tqdm):
        """Postfix and description changes wait for the next line instead of writing one each."""

        def set_postfix(self, ordered_dict=None, refresh=True, **values):
            super().set_postfix(ordered_dict, refresh=False, **values)

        def set_postfix_str(self, s="", refresh=True):
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc=None, refresh=True):
            super().set_description(desc, refresh=False)

    kwargs |= {"file": _LineWriter(sys.stderr), "mininterval": max(kwargs.get("mininterval", 0), LOG_INTERVAL_S), "dynamic_ncols": False, "ncols": 100, "ascii": True}
    return LogBar(iterable, **kwargs)
