"""``FoldConstantOps``: calls of a few ops on constants folded with numpy, before TVM's
``FoldConstant``.

TVM's ``FoldConstant`` evaluates a constant call by legalizing it, compiling the kernel with
LLVM and running it: about 57 ms a call. A quantized model has hundreds: light DenseNet-121
int8 folds 308 ``dequantize`` of weights and biases in ``prepare`` (18.0 s) and 248
``expand_dims`` of per-channel constants, 62 adds and 62 square roots (batch norms left
elementwise) in ``lower`` (14.2 s), half of its 66 s compile. The ops of this table give in numpy
TVM's results bit for bit: data movement (the same bytes reshaped or permuted); integer casts
(wrapping) and casts to a float type (rounded to nearest, as LLVM's conversions);
``dequantize``'s legalization (``relax/transform/legalize_ops/qdq.py``): ``float32(int32(x) -
zp) * float32(scale)``, one float32 multiply; adds, subtracts and products of one dtype, and
divisions and square roots of floats: one IEEE operation, or a wrapping integer one. A call of
any other op, a cast from a float to an integer (out-of-range values are undefined in LLVM) or
a shape not known stays for ``FoldConstant``. Rules of one pass (``rules.RuleSet``), not
recorded as outcomes (a line for every weight of the model).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from .relax_tools import const_of, static_shape
from .rules import Rule, RuleSet

PASS_NAME = "FoldConstantOps"
#: Traversals at most (each folds one more op of every chain of constant calls).
MAX_ROUNDS = 8


def _reshaped(call: relax.Call, x: np.ndarray) -> np.ndarray | None:
    shape = static_shape(call)
    return None if shape is None else x.reshape(shape)


def _permuted(call: relax.Call, x: np.ndarray) -> np.ndarray:
    axes = call.attrs.axes
    return np.transpose(x, None if axes is None else [int(a) for a in axes])


def _cast(call: relax.Call, x: np.ndarray) -> np.ndarray | None:
    dtype = np.dtype(str(call.attrs.dtype)) if str(call.attrs.dtype) != "bool" else None
    if dtype is None or x.dtype == np.bool_ or (x.dtype.kind == "f" and dtype.kind != "f"):
        return None
    return x.astype(dtype)


def _dequantize(call: relax.Call, x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray | None:
    if str(call.attrs.out_dtype) != "float32" or x.dtype.kind not in "iuf":
        return None
    axis = int(call.attrs.axis) % max(x.ndim, 1)
    along = [1] * x.ndim
    if x.ndim:
        along[axis] = -1

    def per_channel(v: np.ndarray) -> np.ndarray:
        return v.reshape(-1)[0] if v.size == 1 else v.reshape(along)

    compute = np.float32 if x.dtype.kind == "f" else np.int32
    sub = x.astype(compute) - per_channel(zp).astype(compute)
    return (sub.astype(np.float32) * per_channel(scale).astype(np.float32)).astype(np.float32)


def _arithmetic(ufunc, kinds: str = "iuf"):
    def fold(call: relax.Call, *operands: np.ndarray) -> np.ndarray | None:
        dtype = operands[0].dtype
        if any(o.dtype != dtype for o in operands) or dtype.kind not in kinds:  # (wrapping integers, IEEE floats: one rounding)
            return None
        with np.errstate(all="ignore"):
            return np.asarray(ufunc(*operands)).astype(dtype)

    return fold


#: op -> (the arguments that must be constants, the shape argument's pattern or None, numpy).
FOLDS = {
    "relax.expand_dims": (1, None, _reshaped),
    "relax.squeeze": (1, None, _reshaped),
    "relax.flatten": (1, None, _reshaped),
    "relax.reshape": (1, wildcard(), _reshaped),
    "relax.permute_dims": (1, None, _permuted),
    "relax.astype": (1, None, _cast),
    "relax.dequantize": (3, None, _dequantize),
    "relax.add": (2, None, _arithmetic(np.add)),
    "relax.subtract": (2, None, _arithmetic(np.subtract)),
    "relax.multiply": (2, None, _arithmetic(np.multiply)),
    "relax.divide": (2, None, _arithmetic(np.divide, "f")),  # (integer division rounds otherwise)
    "relax.sqrt": (1, None, _arithmetic(np.sqrt, "f")),
}


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class FoldConstantOps(RuleSet):
    """Fold the calls of ``FOLDS``' ops on constants with numpy (module doc)."""

    def __init__(self):
        rules = []
        for name, (constants, shape, fold) in FOLDS.items():
            args = [is_const() for _ in range(constants)]
            pattern = is_op(name)(*args, *([shape] if shape is not None else []))
            rules.append(Rule(pattern, self._decider(args, fold), recorded=False))
        super().__init__(rules)

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        # a fold makes a new call of the next op of a chain (dequantize -> reshape -> expand_dims),
        # which the rules meet on their next traversal only
        for _ in range(MAX_ROUNDS):
            folded = super().transform_module(mod, ctx)
            if folded.same_as(mod):
                return mod
            mod = folded
        return mod

    @staticmethod
    def _decider(args: list, fold):
        def decide(call: relax.Call, matches):
            values = [const_of(matches.get(a), {}) for a in args]  # (an argument may be a variable bound to the constant)
            if any(v is None for v in values) or not isinstance(call.ty, relax.TensorType):
                return None
            out = fold(call, *values)
            if out is None or str(out.dtype) != str(call.ty.dtype):
                return None
            return relax.const(out, str(out.dtype)), "folded with numpy"

        return decide

