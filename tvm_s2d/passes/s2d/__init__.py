"""The space-to-depth rewrite: which convs and how (``conv2d``: the decision), what runs in the
S2D domain (``elementwise``), the data movement it emits and recognises (``emit``), and the
pass (``SpaceToDepthConv2d``)."""
