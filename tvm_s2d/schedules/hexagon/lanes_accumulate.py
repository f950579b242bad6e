"""The channel-in-lanes conv's accumulation of a block of output pixels (``accumulate_block``,
the ``vrmpyub`` sums the written-out kernels share: ``lanes.overlapping_vrmpy``,
``lanes.summing_vrmpy``, ``lanes_fused``) and how it reads the input words (``pairing``): one
word a ``vrmpy``, or two a 64-bit load. Takes a ``lanes.PackedConv`` (not imported here)."""

from __future__ import annotations

from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VECTOR_BYTES, hvx, paired_word

#: Pixels a block at least for ``summing_vrmpy`` of one lane block to read a pixel's words in pairs
#: (``pairing``; SqueezeNet's 23-column 128 -> 16, blocks of 4: 12,557 -> 13,894 packets so).
PAIRED_BLOCK = 6


def pairs_words(conv) -> bool:
    """Whether ``accumulate_block`` reads a pixel's channel words two at a time (``paired_word``):
    an even count of them, and one lane block with more than 4 words or 3 blocks or more.
    Measured on 21 convs (``summing_vrmpy``'s; the tensorized kernels load as they do): 0.78-0.97x
    the packets where taken (6x6 48 -> 144 0.78x, 24x24 16 -> 72 0.92x, 12x12 88 -> 24 0.88x), but
    1.05-1.18x on two lane blocks (6x6 120 -> 48, 96 -> 40) and 1.25x on 24x24 16 -> 16 (4 words)."""
    words, blocks = conv.cin // DEPTH, conv.cout_blocks
    return words % 2 == 0 and (blocks >= 3 or (blocks == 1 and words > 4))


def pairing(conv, block: int) -> str | None:
    """How ``summing_vrmpy`` reads its words: ``"words"`` (``pairs_words``; one lane block: blocks
    of at least ``PAIRED_BLOCK`` pixels), ``"taps"`` (``pairs_taps``), else one at a time (None)."""
    if pairs_words(conv) and (conv.cout_blocks >= 3 or block >= PAIRED_BLOCK):
        return "words"
    return "taps" if pairs_taps(conv) else None


def pairs_taps(conv) -> bool:
    """Whether ``accumulate_block`` reads a conv of one word a pixel (4 channels or fewer) two
    taps of a row at a time (``paired_word``): its column stride and input width even, so each
    pair starts at an even word (the 3x3/2 RGB stem of 96x96: 14,540 packets a word at a time)."""
    return conv.cin // DEPTH == 1 and conv.strides[1] % 2 == 0 and conv.in_hw[1] % 2 == 0 and conv.kernel_hw[1] >= 2


def weight_vector(w, conv, ko, ky, kx, g):
    """The packed weights (bytes) of lane block ``ko``, tap ``(ky, kx)`` and input word ``g``: one
    vector, as ``vrmpyub`` takes it."""
    return T.reinterpret(w.vload([(((ko * conv.kernel_hw[0] + ky) * conv.kernel_hw[1] + kx) * (conv.cin // DEPTH) + g)
                                  * VECTOR_BYTES], "uint8x128"), dtype="int32x32")


def vrmpy_acc(acc, i, weights, word):
    """``acc[i]`` plus ``vrmpyub`` of ``weights`` by the 4 input bytes ``word``."""
    return hvx("vrmpyub.acc", acc[i, T.ramp(0, 1, 32)], weights, word)


def pixel_word(conv, b, y, ky, column, kx):
    """The first input word of the pixel tap ``(ky, kx)`` of output pixel ``column`` of row ``y``
    reads (``x`` as words: a pixel's ``cin / 4``)."""
    return ((b * conv.in_hw[0] + y * conv.strides[0] + ky) * conv.in_hw[1] + column * conv.strides[1] + kx) * (conv.cin // DEPTH)


@T.macro
def accumulate_block(acc, x, w, offsets, b, y, ko, x0, conv, block: int, pairs=None):
    """``acc[i]`` (``i < block``) = the offsets of output pixel ``x0 + i`` of row ``y`` plus its
    ``vrmpyub`` sums for lane block ``ko``: ``x`` the input as words (a pixel's 4 channels),
    ``w`` the packed weights as bytes (``overlapping_vrmpy`` and ``lanes_fused``; ``offsets``
    None: from zero, ``summing_vrmpy``)."""
    # (no assignments: a macro's would bind TIR variables, and an unrolled extent must stay a constant)
    for i in T.unroll(block):
        if offsets is None:
            acc[i, T.ramp(0, 1, 32)] = T.broadcast(T.int32(0), LANES)
        else:
            acc[i, T.ramp(0, 1, 32)] = T.broadcast(offsets[b, y, x0 + i], LANES)
    if pairs == "words":  # a pixel's words in pairs: one 64-bit load for two vrmpy (two memory ops a packet)
        for ky in range(conv.kernel_hw[0]):
            for kx in T.unroll(conv.kernel_hw[1]):
                for g in range(conv.cin // DEPTH // 2):
                    for i in T.unroll(block):
                        for h in T.unroll(2):
                            acc[i, T.ramp(0, 1, 32)] = vrmpy_acc(acc, i, weight_vector(w, conv, ko, ky, kx, 2 * g + h),
                                                                 paired_word(x, pixel_word(conv, b, y, ky, x0 + i, kx) + 2 * g, h))
    elif pairs == "taps":  # one word a pixel: a row's taps kx, kx + 1 in pairs (even words: stride and width even)
        for ky in range(conv.kernel_hw[0]):
            for kp in T.unroll(conv.kernel_hw[1] // 2):
                for i in T.unroll(block):
                    for h in T.unroll(2):
                        acc[i, T.ramp(0, 1, 32)] = vrmpy_acc(acc, i, weight_vector(w, conv, ko, ky, 2 * kp + h, 0),
                                                             paired_word(x, pixel_word(conv, b, y, ky, x0 + i, 2 * kp), h))
            if conv.kernel_hw[1] % 2 == 1:
                for i in T.unroll(block):
                    acc[i, T.ramp(0, 1, 32)] = vrmpy_acc(acc, i, weight_vector(w, conv, ko, ky, conv.kernel_hw[1] - 1, 0),
                                                         x[pixel_word(conv, b, y, ky, x0 + i, conv.kernel_hw[1] - 1)])
    else:
        for ky in range(conv.kernel_hw[0]):
            for kx in T.unroll(conv.kernel_hw[1]):
                for g in range(conv.cin // DEPTH):
                    for i in T.unroll(block):
                        acc[i, T.ramp(0, 1, 32)] = vrmpy_acc(acc, i, weight_vector(w, conv, ko, ky, kx, g),
                                                             x[pixel_word(conv, b, y, ky, x0 + i, kx) + g])
