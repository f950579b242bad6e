"""The S2D domain: a tensor kept as ``S2D(aligned image)`` between layers, and the numpy
moves into and out of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import (
    ceil_div,
    d2s_steps,
    depth_to_space,
    movement_is_free,
    nchw_to,
    space_to_depth,
    spatial_axes,
)


@dataclass(frozen=True)
class Domain:
    """A tensor living in the S2D domain: ``S2D(aligned image)``.

    The aligned image holds image row 0 at aligned row ``offset`` (per axis, ``< block``) and
    spans ``extent`` blocks, the fewest covering the image. Rows outside the image hold zeros
    when ``clean``, anything (e.g. outputs computed past the image) otherwise.
    """

    block: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    clean: bool = False

    @property
    def extent(self) -> tuple[int, int]:
        return tuple(ceil_div(self.size[i] + self.offset[i], self.block[i]) for i in (0, 1))

    @property
    def exact(self) -> bool:
        """The blocks hold the image and nothing else (no offset, no tail)."""
        return self.offset == (0, 0) and all(self.extent[i] * self.block[i] == self.size[i] for i in (0, 1))

    def inside(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(C*bh*bw, extent_h)`` and ``(C*bh*bw, extent_w)``: which S2D element is in the image."""
        (bh, bw), masks = self.block, []
        for axis, b in enumerate(self.block):
            rows = np.arange(self.extent[axis])[None, :] * b
            phase = np.arange(bh * bw)[:, None] // bw if axis == 0 else np.arange(bh * bw)[:, None] % bw
            image_row = rows + phase - self.offset[axis]
            inside = (image_row >= 0) & (image_row < self.size[axis])
            masks.append(np.repeat(inside, channels, axis=0))
        return masks[0], masks[1]

    def inside_masks(self, channels: int, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
        """``inside`` as two boolean arrays broadcastable against the S2D tensor in ``layout``."""
        inside_h, inside_w = self.inside(channels)
        if layout == "NCHW":
            return inside_h[None, :, :, None], inside_w[None, :, None, :]
        return inside_h.T[None, :, None, :], inside_w.T[None, None, :, :]

    # numpy conversions, the reference for the Relax ones
    def enter(self, x: np.ndarray, layout: str = "NCHW", fill=0) -> np.ndarray:
        hax, wax, _ = spatial_axes(layout)
        widths = [(0, 0)] * 4
        for axis, i in ((hax, 0), (wax, 1)):
            widths[axis] = (self.offset[i], self.extent[i] * self.block[i] - self.offset[i] - self.size[i])
        return space_to_depth(np.pad(x, widths, constant_values=fill), self.block, layout)

    def leave_bytes(self, batch: int, channels: int, itemsize: int, layout: str = "NCHW") -> int:
        """Bytes read and written to bring the tensor back to plain (0 for a pure reshape)."""
        shape = nchw_to(layout, (batch, channels * self.block[0] * self.block[1], *self.extent))
        if self.exact and movement_is_free(shape, self.block, layout, d2s_steps):
            return 0
        return 2 * batch * channels * self.size[0] * self.size[1] * itemsize

    def leave(self, x: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        hax, wax, _ = spatial_axes(layout)
        y = depth_to_space(x, self.block, layout)
        for axis, i in ((hax, 0), (wax, 1)):
            y = np.take(y, range(self.offset[i], self.offset[i] + self.size[i]), axis=axis)
        return y
