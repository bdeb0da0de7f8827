"""Checking what the user fixes at compile time: a value bound to a graph input (``--set NAME=VALUE``)
and a shape given to one (``--shape NAME=D1,D2,...``), each against what the file declares."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError

__all__ = ["bind_value", "check_shape", "dims_of", "np_dtype"]


def dims_of(vi) -> list | None:
    """The declared dims of ``ValueInfoProto`` ``vi``: int, the ``dim_param`` string or None per axis;
    None when it declares no shape at all."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def np_dtype(elem: int):
    """The numpy dtype of ONNX element type ``elem``."""
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(elem)


def bind_value(vi, value, opt: str = "--set") -> np.ndarray:
    """``value`` (a number, a list, an array, or a string like ``"16000"`` / ``"1,2"``) as an array of
    graph input ``vi``'s element type and declared shape; a :class:`CompileError` naming the input if it
    is not a number of that type or does not have that shape."""
    name = vi.name
    elem = vi.type.tensor_type.elem_type
    try:
        dt = np.dtype(np_dtype(elem))
    except Exception:  # noqa: BLE001 - unknown element type
        raise CompileError(
            f"{opt} {name}: the input has element type {elem}, which cannot be bound"
        ) from None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise CompileError(
                f"{opt} {name}={value}: not a number or a comma-separated list of numbers"
            ) from None
        arr = np.array(nums if len(nums) > 1 else nums[0])
    else:
        try:
            arr = np.asarray(value)
        except Exception:  # noqa: BLE001
            raise CompileError(f"{opt} {name}: {value!r} is not array-like") from None
        if arr.dtype.kind not in "biuf":
            raise CompileError(f"{opt} {name}: {value!r} is not a number or an array of numbers")
    if dt.kind in "iub":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise CompileError(f"{opt} {name}={_show(value)}: input {name!r} is an integer tensor ({dt})")
        info = np.iinfo(dt) if dt.kind in "iu" else None
        if info is not None and (np.any(arr < info.min) or np.any(arr > info.max)):
            raise CompileError(f"{opt} {name}={_show(value)}: outside the range of {dt}")
    dims = dims_of(vi)
    if dims is not None:
        if arr.ndim != len(dims) and arr.size == int(np.prod([d for d in dims if isinstance(d, int)] or [1])):
            if all(isinstance(d, int) for d in dims):
                arr = arr.reshape(dims)
        if arr.ndim != len(dims) or any(
            isinstance(d, int) and d != s for d, s in zip(dims, arr.shape, strict=True)
        ):
            raise CompileError(
                f"{opt} {name}={_show(value)}: shape {list(arr.shape)} does not match the input's "
                f"declared shape {[d if isinstance(d, int) else '?' for d in dims]}"
            )
    return arr.astype(dt)


def _show(value) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= 40 else s[:37] + "..."


def check_shape(vi, shape, opt: str = "--shape") -> list[int]:
    """``shape`` (a tuple of positive ints or a string ``"1,576"``) for graph input ``vi``: its rank and
    every static size must agree with the file."""
    name = vi.name
    if isinstance(shape, str):
        try:
            shape = [int(p) for p in shape.split(",")]
        except ValueError:
            raise CompileError(f"{opt} {name}={shape}: not a comma-separated list of sizes") from None
    try:
        shape = [int(d) for d in shape]
    except (TypeError, ValueError):
        raise CompileError(f"{opt} {name}: {shape!r} is not a sequence of sizes") from None
    if not shape or any(d <= 0 for d in shape):
        raise CompileError(f"{opt} {name}: sizes must be positive, got {shape}")
    dims = dims_of(vi)
    if dims is not None:
        if len(dims) != len(shape):
            raise CompileError(
                f"{opt} {name}={','.join(map(str, shape))}: the file declares rank {len(dims)} "
                f"({[d if d is not None else '?' for d in dims]})"
            )
        for k, (d, s) in enumerate(zip(dims, shape, strict=True)):
            if isinstance(d, int) and d != s:
                raise CompileError(
                    f"{opt} {name}={','.join(map(str, shape))}: axis {k} has static size {d} in the file"
                )
    return shape
