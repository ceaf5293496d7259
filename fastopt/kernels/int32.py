"""32-bit integer operations for the 8-bit codes (:mod:`fastopt.kernels.blockwise`).

numba types arithmetic on int32 values as int64, so a loop of integer bit operations runs
in 64-bit vector lanes (half as many per instruction) with conversions in between. These
operations stay in 32 bits: on the host they are numba intrinsics emitting one LLVM
instruction each; for the CUDA backend (and its simulator) the plain NumPy versions at the
bottom are bound instead.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _binary(instruction):
    @intrinsic
    def operation(typingctx, a, b):
        def codegen(context, builder, signature, args):
            x, y = (
                context.cast(builder, value, argtype, types.int32)
                for value, argtype in zip(args, signature.args)
            )
            return getattr(builder, instruction)(x, y)

        return types.int32(a, b), codegen

    return operation


add = _binary("add")
sub = _binary("sub")
shl = _binary("shl")
shr = _binary("ashr")  # arithmetic: the sign bit is copied in
bit_and = _binary("and_")
bit_or = _binary("or_")


@intrinsic
def int32(typingctx, a):
    """An integer value as int32 (wrapping)."""

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], types.int32)

    return types.int32(a), codegen


@intrinsic
def bits32(typingctx, a):
    """The bits of a float32, as an int32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def float_of_bits(typingctx, a):
    """The float32 with the bits of an int32."""

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(value, ir.FloatType())

    return types.float32(a), codegen


HOST = {
    "add": add,
    "sub": sub,
    "shl": shl,
    "shr": shr,
    "bit_and": bit_and,
    "bit_or": bit_or,
    "int32": int32,
    "bits32": bits32,
    "float_of_bits": float_of_bits,
}
"""The names :mod:`fastopt.kernels.blockwise`'s codes call, as host intrinsics."""


def _add(a, b):
    return np.int32(np.int32(a) + np.int32(b))


def _sub(a, b):
    return np.int32(np.int32(a) - np.int32(b))


def _shl(a, b):
    return np.int32(np.int32(a) << np.int32(b))


def _shr(a, b):
    return np.int32(np.int32(a) >> np.int32(b))


def _and(a, b):
    return np.int32(np.int32(a) & np.int32(b))


def _or(a, b):
    return np.int32(np.int32(a) | np.int32(b))


def _int32(a):
    return np.int32(a)


PORTABLE = {
    "add": _add,
    "sub": _sub,
    "shl": _shl,
    "shr": _shr,
    "bit_and": _and,
    "bit_or": _or,
    "int32": _int32,
}
"""The same operations on NumPy int32 scalars, for the CUDA backend (as device functions)
and its simulator; ``bits32`` and ``float_of_bits`` come from the backend's bit casts."""
