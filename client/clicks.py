"""The :class:`Click` value type."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Click"]


@dataclass(frozen=True)
class Click:
    """One annotator click in full-image pixel coordinates.

    ``x`` is the column and ``y`` the row, origin at the centre of the top-left pixel, so the
    click ``Click(x=3, y=1)`` lies on ``image[1, 3]``. ``positive`` marks the object (True)
    or the background (False).
    """

    x: float
    y: float
    positive: bool = True

    @property
    def col(self) -> int:
        """The column index of the pixel the click falls on (``x`` rounded half up)."""
        return int(math.floor(self.x + 0.5))

    @property
    def row(self) -> int:
        """The row index of the pixel the click falls on (``y`` rounded half up)."""
        return int(math.floor(self.y + 0.5))
