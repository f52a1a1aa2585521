"""What a running sweep or study reports: the protocol every runner calls and
none owns (the command line draws it; ``--quiet`` and the Python API use this
silent base)."""

from __future__ import annotations

from typing import Any


class Progress:
    """What the sweep reports while it runs. The base class reports nothing
    (``--quiet``); :class:`nth_dynamics.cli.RichProgress` draws it."""

    def start(self, total: int) -> None: ...

    def cell(self, index: int, cell: Any, cached: bool) -> None: ...

    def stage(self, name: str) -> None: ...

    def cell_done(self, cell: Any, seconds: float) -> None: ...

    def finish(self) -> None: ...
