"""The Hexagon passes: NHWC throughout (``HexagonLayout``), quantized convs on HVX kernels
(``HexagonConvs``), their requantization and residual adds (``HexagonRequantize``), uint8
data movement (``HexagonMovement``)."""
