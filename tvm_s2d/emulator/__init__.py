"""Running Hexagon kernels without a device: ``qemu`` compiles a TIR kernel for v66 + HVX,
links it with a freestanding harness and runs it under ``qemu-hexagon``, counting executed
packets; ``layer`` runs one conv layer in one form (the tuner's Hexagon measurement);
``network`` builds the quantized NHWC network the pipeline benchmark compiles."""
