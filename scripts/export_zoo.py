"""Export the zoo's torchvision models to ONNX and commit them without weights.

Each model (random init, ``torch.manual_seed(0)``) is exported with the TorchScript exporter
(``opset_version=17``, ``dynamo=False``; batch norms folded into the convs), checked against
PyTorch in ONNX Runtime, then stripped: each weight becomes a ``ConstantOfShape`` of its shape
(``tvm_s2d.zoo.strip_weights``), and saved as ``tvm_s2d/zoo_models/<name>_<size>.onnx``;
``tvm_s2d.zoo`` fills the weights back with ``fill_weights``. Sizes: 224 and the small size 96,
or the smallest of ``SMALL_SIZES`` that the model takes (all take 96). Needs the ``zoo`` extra
(``pip install -e ".[zoo,test]"``; the committed graphs come from torch 2.14.1 and torchvision
0.29.1); CI does not, the stripped graphs are committed.

    python scripts/export_zoo.py                 # all models
    python scripts/export_zoo.py resnet18 googlenet
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tvm_s2d.zoo import MODELS_DIR, TORCHVISION, strip_weights  # noqa: E402

SMALL_SIZES = (96, 112, 128, 160, 192)


def build(name: str):
    import torch
    import torchvision

    models = torchvision.models
    if name == "googlenet":
        return models.googlenet(weights=None, aux_logits=False, init_weights=True)
    if name == "lraspp_mobilenet_v3_large":

        class Out(torch.nn.Module):  # the segmentation models return a dict
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model(x)["out"]

        return Out(models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))
    return models.get_model(name, weights=None)


def export(name: str, size: int) -> onnx.ModelProto:
    """The model exported at ``1x3xsize x size``, its ONNX Runtime output checked against PyTorch."""
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(1, 3, size, size)
    buffer = io.BytesIO()
    torch.onnx.export(model, x, buffer, opset_version=17, dynamo=False, input_names=["image"], output_names=["output"])
    exported = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(exported)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * float(np.abs(expected).max()))
    return exported


def main(argv=None) -> int:
    import warnings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to export (default all: {', '.join(TORCHVISION)})")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's
    MODELS_DIR.mkdir(exist_ok=True)
    for name in args.names or TORCHVISION:
        for sizes in ((224,), SMALL_SIZES):
            for size in sizes:
                start = time.perf_counter()
                try:
                    model = export(name, size)
                except Exception as exc:
                    print(f"{name} {size}: fails: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}", flush=True)
                    continue
                stripped = strip_weights(model)
                onnx.checker.check_model(stripped)
                path = MODELS_DIR / f"{name}_{size}.onnx"
                onnx.save(stripped, path)
                kept = sum(int(np.prod(init.dims)) for init in stripped.graph.initializer if init.data_type == onnx.TensorProto.FLOAT)
                print(f"{name} {size}: {path.stat().st_size / 1024:.1f} KiB (float values kept: {kept}),"
                      f" {time.perf_counter() - start:.1f} s", flush=True)
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
