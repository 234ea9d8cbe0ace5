"""Vector values of :data:`LANES` lanes for the numba kernels (:mod:`.pspc_rows`).

numba vectorises loops over arrays, so every intermediate of a multi-step computation goes through
memory; and a loop over a few lanes is fully unrolled by LLVM, which then cannot vectorise it (it
cannot prove that the arrays do not alias), so it runs as scalar code. A value of type :data:`vf64`
or :data:`vf32` is instead an LLVM ``<LANES x double>`` / ``<LANES x float>`` kept in registers
(LLVM splits it into as many AVX-512, AVX2 or SSE registers as it needs): a kernel loads the lanes
once, computes on them, and stores the result once.

``LANES = 32`` (four / two AVX-512 registers): with 16 lanes the kernels are bound by the latency of
their dependency chains; with 32 two independent halves overlap; with 64 the registers spill.

numba stamps a cached kernel with its own source file only; :mod:`.numba_target` adds this
module to the stamp of every kernel of the package, so editing it recompiles them
(``numba_target.CACHE_DEPENDENCIES``).

Functions (all usable only inside ``@njit`` code):

* :func:`load` / :func:`store`: ``LANES`` consecutive elements of a 1-D float32 or float64
  array at an element offset (no bounds check);
* :func:`splat64` / :func:`splat32`: a scalar in every lane;
* ``+ - *`` between two vectors of one type (fast-math ``contract``: ``a * b + c`` is an FMA),
  :func:`vmin`;
* :func:`widen` (float32 -> float64) and :func:`narrow` (float64 -> float32);
* :func:`flush_below`: lanes below a bound set to 0;
* :func:`hsum`, :func:`hmin`: the sum / minimum of the lanes (float64);
* :func:`any_gt`, :func:`any_ge`: whether any lane of ``a`` exceeds ``b`` (a scalar; lanes
  never NaN): the lane-wise maximum of the register halves, then one comparison and one mask
  test (instead of one comparison per register and the masks merged);
* :func:`exp_weights`: ``exp(t)`` of float64 or float32 ``t`` as float32 (0 below ``cut``), the
  weights of the kernels (range reduction in ``t``'s type, polynomial in float32).

Instruction counts matter: the kernels are bound by the vector arithmetic ports, not by memory.
Hence the comparisons above (one per value, where LLVM would otherwise compare a narrowed float32
vector as two float64 ones per register), the exponential's rounding by a shifter constant whose
sum also holds the exponent bits (no floor, float-to-int conversion or add) with a degree-5
fitted polynomial, and one FMA for the exponent.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

LANES = 32
_FLAGS = ("contract", "nsz")
_I32 = ir.IntType(32)


class Vec(types.Type):
    """:data:`LANES` lanes of ``dtype`` (float32 or float64) in registers."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        super().__init__(name=f"Vec{LANES}({dtype})")


vf32 = Vec(types.float32)
vf64 = Vec(types.float64)


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, LANES))


def _float_array(ary) -> bool:
    return (
        isinstance(ary, types.Array)
        and ary.ndim == 1
        and ary.layout == "C"
        and ary.dtype in (types.float32, types.float64)
    )


def _lane_ptr(context, builder, arytype, ary, index, indextype):
    a = context.make_array(arytype)(context, builder, ary)
    i = context.cast(builder, index, indextype, types.intp)
    ptr = builder.gep(a.data, [i])
    return builder.bitcast(ptr, ir.VectorType(ptr.type.pointee, LANES).as_pointer())


@intrinsic
def load(typingctx, ary, index):
    """``ary[index : index + LANES]`` as a vector (1-D C-contiguous float array)."""
    if not (_float_array(ary) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _lane_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(ptr, align=ary.dtype.bitwidth // 8)

    return Vec(ary.dtype)(ary, index), codegen


@intrinsic
def store(typingctx, ary, index, vec):
    """``ary[index : index + LANES] = vec`` (same float type)."""
    if not (_float_array(ary) and isinstance(vec, Vec) and vec.dtype == ary.dtype):
        return None

    def codegen(context, builder, sig, args):
        ptr = _lane_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], ptr, align=ary.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(ary, index, vec), codegen


def _splat(builder, value, vt):
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(
        v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count)
    )


def _splat_intrinsic(dtype):
    @intrinsic
    def splat(typingctx, x):
        if not isinstance(x, (types.Float, types.Integer)):
            return None
        vt = Vec(dtype)

        def codegen(context, builder, sig, args):
            value = context.cast(builder, args[0], sig.args[0], dtype)
            return _splat(builder, value, context.get_value_type(vt))

        return vt(x), codegen

    return splat


splat64 = _splat_intrinsic(types.float64)
splat32 = _splat_intrinsic(types.float32)


def _binary(opname):
    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, opname)(args[0], args[1], flags=_FLAGS)

        return a(a, b), codegen

    return op


_add, _sub, _mul = _binary("fadd"), _binary("fsub"), _binary("fmul")

for _op, _impl in ((operator.add, _add), (operator.sub, _sub), (operator.mul, _mul)):

    def _register(op=_op, impl=_impl):
        @overload(op)
        def _ol(a, b):
            if isinstance(a, Vec) and a == b:
                return lambda a, b: impl(a, b)

    _register()


def _call(builder, name, ret, args, fastmath=()):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, args, fastmath=fastmath)


def _suffix(vt: ir.VectorType) -> str:
    return f"v{LANES}f{64 if isinstance(vt.element, ir.DoubleType) else 32}"


@intrinsic
def vmin(typingctx, a, b):
    """Lane-wise minimum."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        lt = builder.fcmp_ordered("<", args[0], args[1])
        return builder.select(lt, args[0], args[1])

    return a(a, b), codegen


@intrinsic
def flush_below(typingctx, a, bound):
    """``a`` with the lanes below the scalar ``bound`` set to 0 (e.g. to keep products of tiny
    weights from becoming subnormal numbers, which are slow on x86)."""
    if not (isinstance(a, Vec) and isinstance(bound, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        vt = args[0].type
        b = _splat(builder, context.cast(builder, args[1], sig.args[1], a.dtype), vt)
        keep = builder.fcmp_ordered(">=", args[0], b)
        return builder.select(keep, args[0], ir.Constant(vt, None))

    return a(a, bound), codegen


def _conversion(src: Vec, dst: Vec, opname: str):
    @intrinsic
    def convert(typingctx, a):
        if a != src:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, opname)(args[0], context.get_value_type(dst))

        return dst(a), codegen

    return convert


#: float32 lanes -> float64 lanes.
widen = _conversion(vf32, vf64, "fpext")
#: float64 lanes -> float32 lanes (rounded to nearest).
narrow = _conversion(vf64, vf32, "fptrunc")


@intrinsic
def hsum(typingctx, a):
    """Sum of the lanes (float64 vector; any order)."""
    if a != vf64:
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(ir.DoubleType(), 0.0)
        name = f"llvm.vector.reduce.fadd.{_suffix(args[0].type)}"
        return _call(builder, name, ir.DoubleType(), [zero, args[0]], fastmath=("reassoc",))

    return types.float64(a), codegen


@intrinsic
def hmin(typingctx, a):
    """Minimum of the lanes (float64 vector, no NaN)."""
    if a != vf64:
        return None

    def codegen(context, builder, sig, args):
        name = f"llvm.vector.reduce.fmin.{_suffix(args[0].type)}"
        return _call(builder, name, ir.DoubleType(), [args[0]], fastmath=("nnan",))

    return types.float64(a), codegen


def _lanes_max(builder, v):
    """Lane-wise maximum of the halves of ``v``, halved down to 512 bits (one AVX-512
    register): ``any(v > b)`` is ``any(_lanes_max(v) > b)``, one comparison instead of one per
    register (and no mask merging)."""
    n = v.type.count
    bits = 64 if isinstance(v.type.element, ir.DoubleType) else 32
    while n * bits > 512:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n)))
        )
        v = builder.select(builder.fcmp_ordered(">", lo, hi), lo, hi)
    return v


def _any_intrinsic(op):
    @intrinsic
    def any_cmp(typingctx, a, b):
        if not (isinstance(a, Vec) and isinstance(b, (types.Float, types.Integer))):
            return None

        def codegen(context, builder, sig, args):
            m = _lanes_max(builder, args[0])
            bound = _splat(builder, context.cast(builder, args[1], sig.args[1], a.dtype), m.type)
            mask = builder.fcmp_ordered(op, m, bound)
            it = ir.IntType(m.type.count)
            return builder.icmp_unsigned("!=", builder.bitcast(mask, it), ir.Constant(it, 0))

        return types.boolean(a, b), codegen

    return any_cmp


any_gt = _any_intrinsic(">")
any_ge = _any_intrinsic(">=")

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
#: ln 2 in two float32 parts (Cody-Waite): ``_LN2_HI`` has 15 significant bits, so ``n _LN2_HI``
#: is exact in float32 for ``|n| < 512``; ``_LN2_LO = ln 2 - _LN2_HI``.
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068202862268e-06
#: exp(r) on ``|r| <= ln2 / 2``: degree-5 polynomial fitted to the relative error (7.5e-8;
#: 2.1e-7 evaluated in float32), lowest degree first.
_POLY = (
    1.00000007165457,
    0.9999996919864385,
    0.499988948519776,
    0.16667574746014835,
    0.04191538192807262,
    0.008297653918281585,
)
#: Adding ``_SHIFTER = 1.5 x 2^23 + 127`` to a float32 ``|x| < 2^21`` rounds it to the nearest
#: integer ``n`` (``n = (x + _SHIFTER) - _SHIFTER``) and leaves ``n + 127`` in the low bits of
#: the sum, so shifting its bits left by 23 gives the float32 ``2^n`` (``-126 <= n <= 127``).
_SHIFTER = 12582912.0 + 127.0
#: The same rounding in float64 (``1.5 x 2^52``).
_SHIFTER64 = 6755399441055744.0


@intrinsic
def exp_weights(typingctx, t, cut):
    """``exp(t)`` as float32 lanes for ``t <= 88``, 0 where ``t < cut`` (``cut >= -87``, so a
    result is never subnormal). ``t = n ln2 + r`` with ``n`` the nearest integer (rounded by
    adding :data:`_SHIFTER`) and ``|r| <= ln2 / 2``; ``exp(r)`` a degree-5 polynomial
    (:data:`_POLY`) in float32, times ``2^n`` built from the bits of the rounded sum. For
    float64 ``t`` the reduction is in float64 (relative error < 4e-7 however large ``|t|``);
    for float32 ``t`` it is in float32 with ``ln2`` in two parts (relative error < 4e-7 for the
    float32 ``t`` given; a float64 value rounded to float32 first adds ``|t| 6e-8``); on
    ``[-64, 40]`` it is at most 2.0e-7."""
    if not (isinstance(t, Vec) and isinstance(cut, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        vt = args[0].type
        v32 = ir.VectorType(f32, LANES)
        vi32 = ir.VectorType(_I32, LANES)

        def const(v, x):
            return ir.Constant(v, [ir.Constant(v.element, x)] * LANES)

        cutv = _splat(builder, context.cast(builder, args[1], sig.args[1], t.dtype), vt)
        keep = builder.fcmp_ordered(">=", args[0], cutv)
        tc = builder.select(keep, args[0], cutv)
        x = builder.fmul(tc, const(vt, _LOG2E), flags=_FLAGS)
        if t == vf64:
            shifter = const(vt, _SHIFTER64)
            n = builder.fsub(builder.fadd(x, shifter, flags=_FLAGS), shifter, flags=("nsz",))
            r = builder.fsub(tc, builder.fmul(n, const(vt, _LN2), flags=_FLAGS), flags=_FLAGS)
            r = builder.fptrunc(r, v32)
            scale = builder.add(builder.fptosi(n, vi32), const(vi32, 127))
        else:
            y = builder.fadd(x, const(vt, _SHIFTER), flags=_FLAGS)
            n = builder.fsub(y, const(vt, _SHIFTER), flags=("nsz",))
            r = builder.fsub(tc, builder.fmul(n, const(vt, _LN2_HI), flags=_FLAGS), flags=_FLAGS)
            r = builder.fsub(r, builder.fmul(n, const(vt, _LN2_LO), flags=_FLAGS), flags=_FLAGS)
            scale = builder.bitcast(y, vi32)
        p = const(v32, _POLY[-1])
        for coef in reversed(_POLY[:-1]):
            p = builder.fadd(builder.fmul(p, r, flags=_FLAGS), const(v32, coef), flags=_FLAGS)
        pow2 = builder.bitcast(builder.shl(scale, const(vi32, 23)), v32)
        e = builder.fmul(p, pow2, flags=_FLAGS)
        return builder.select(keep, e, const(v32, 0.0))

    return vf32(t, cut), codegen
