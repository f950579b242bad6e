"""The rewrite of one spatial axis (``AxisPlan``)
----------------------------------------------
Original conv along one axis: input length ``N``, kernel ``k``, stride ``s``, dilation ``d``,
padding ``(pl, ph)``. Output ``i`` reads padded row ``R = i*s + a*d`` for taps ``a < k``.

With block ``b`` (``s`` and ``b`` must divide one another) the input is aligned (cropped to
the rows ever read, padded by ``e`` zeros in front and zeros behind to a multiple of ``b``),
S2D'd, and convolved with stride ``m`` and padding ``(P_lo, P_hi)``. A *phase* ``r`` in
``[0, b)`` fixes the alignment: ``P_lo * b + e = pl + r``, so padded row ``R`` sits at
S2D-domain row ``R + r``.

The output comes in blocks of ``ob`` rows: ``ob = b / s`` when ``s`` divides ``b`` (the
output is itself S2D'd and needs a depth-to-space), else ``ob = 1`` and ``m = s / b``. Either
way ``ob * s = m * b``. For output row ``i = I * ob + p`` and tap ``a``, let
``t = p*s + a*d + r``; it reads S2D row ``I*m + t // b``, phase ``t % b``. So the folded
kernel has tap ``u = t // b`` and input phase ``q = t % b``, its length is
``max(t) // b + 1`` (``ceil((k + b - 1) / b)`` for ``s = d = 1, r = 0``), and taps no
``(p, a)`` maps to are zero. The phase is chosen to minimise that length, then to avoid the
front padding ``e``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import Unsupported, ceil_div


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis of a conv is rewritten with block ``block`` (see module doc).

    ``offset_in`` is the aligned row of input row 0: the explicit front padding for a plain
    input, the domain's offset for an input already in the S2D domain (``extent_in`` blocks
    long). ``offset_out`` is the aligned row of output row 0 in the output blocks.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]
    block: int
    offset_in: int = 0
    offset_out: int = 0
    extent_in: int | None = None  # None: plain input, aligned and S2D'd by the rewrite

    @classmethod
    def candidates(cls, size, kernel, stride, dilation, pad, block, offset_in=None, extent_in=None) -> list[AxisPlan]:
        """Every valid plan: all input offsets (when free) times all output offsets."""
        if block > size:
            raise Unsupported(f"block {block} exceeds the input size {size}")
        if stride % block and block % stride:
            raise Unsupported(f"stride {stride} and block {block} do not divide one another")
        first = cls(size, kernel, stride, dilation, tuple(pad), block)
        if first.out_size < 1:
            raise Unsupported("the conv has an empty output")
        if first.rows_read < 1:
            raise Unsupported("the conv reads only padding")
        offsets_in = range(block) if offset_in is None else [offset_in]
        return [
            cls(size, kernel, stride, dilation, tuple(pad), block, e_in, e_out, extent_in)
            for e_in in offsets_in
            for e_out in range(first.out_block)
        ]

    @property
    def out_size(self) -> int:
        span = self.dilation * (self.kernel - 1) + 1
        return (self.size + self.pad[0] + self.pad[1] - span) // self.stride + 1

    @property
    def out_block(self) -> int:
        """Output rows per S2D-domain output row (``ob``); > 1 needs a depth-to-space."""
        return self.block // self.stride if self.block % self.stride == 0 else 1

    @property
    def conv_stride(self) -> int:
        return self.stride // self.block if self.stride % self.block == 0 else 1

    def _t(self, p: int, a: int) -> int:
        """Aligned input row, relative to the output block's first read, of phase p, tap a."""
        return (p - self.offset_out) * self.stride + a * self.dilation - self.pad[0] + self.offset_in

    @property
    def _u_min(self) -> int:
        return self._t(0, 0) // self.block

    @property
    def taps(self) -> list[tuple[int, int, int, int]]:
        """``(p, a, u, q)``: output phase p and original tap a read folded tap u, phase q."""
        return [
            (p, a, self._t(p, a) // self.block - self._u_min, self._t(p, a) % self.block)
            for p in range(self.out_block)
            for a in range(self.kernel)
        ]

    @property
    def conv_kernel(self) -> int:
        return self._t(self.out_block - 1, self.kernel - 1) // self.block - self._u_min + 1

    @property
    def conv_out(self) -> int:
        """Output blocks: enough to hold rows ``[-offset_out, out_size)``; the output extent."""
        return ceil_div(self.out_size + self.offset_out, self.out_block)

    @property
    def rows_read(self) -> int:
        """Input rows any output reads; the rest are cropped before S2D."""
        last = (self.out_size - 1) * self.stride + (self.kernel - 1) * self.dilation - self.pad[0]
        return min(self.size, last + 1)

    @property
    def _rows_needed(self) -> int:
        """S2D-domain rows (padding included) the conv reads for its ``conv_out`` outputs."""
        return (self.conv_out - 1) * self.conv_stride + self.conv_kernel

    @property
    def s2d_size(self) -> int:
        """Length of the conv's S2D input in blocks (trailing blocks nobody reads are cut)."""
        if self.extent_in is None:
            available = ceil_div(self.offset_in + self.rows_read, self.block)
        else:
            available = self.extent_in
        return min(available, self._rows_needed + self._u_min)

    @property
    def conv_pad(self) -> tuple[int, int]:
        lo = -self._u_min
        return lo, self._rows_needed - lo - self.s2d_size

    @property
    def front_pad(self) -> int:
        """Explicit zeros in front of a plain input before S2D."""
        return self.offset_in

    @property
    def back_pad(self) -> int:
        """Explicit zeros behind a plain input before S2D; negative means crop that many rows."""
        return self.s2d_size * self.block - self.offset_in - self.size

    @property
    def trim_in(self) -> int:
        """Trailing blocks of a domain input the conv never reads (cut before the conv)."""
        return 0 if self.extent_in is None else self.extent_in - self.s2d_size

    @property
    def reads_outside(self) -> bool:
        """Whether valid outputs read aligned rows of the input tensor outside the image."""
        first = self.offset_in - self.pad[0]
        last = first + (self.out_size - 1) * self.stride + (self.kernel - 1) * self.dilation
        end = self.offset_in + self.size
        return (first < self.offset_in and self.offset_in > 0) or (last >= end and self.s2d_size * self.block > end)

    @property
    def exact_out(self) -> bool:
        """The output blocks hold exactly the output rows, nothing before or after."""
        return self.offset_out == 0 and self.conv_out * self.out_block == self.out_size
