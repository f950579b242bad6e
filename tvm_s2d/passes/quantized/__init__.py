"""Quantized ops as integer arithmetic: QDQ convs as integer convs (``QDQConvToInteger``) and
the integer rule set (``IntegerArithmetic``: ``IntegerRequantize``, ``IntegerAdd``,
``IntegerPoolConcat``)."""
