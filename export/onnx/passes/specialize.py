"""Specializing a graph to the inputs the user fixes: bindings, shapes, constant ``If`` conditions.

:func:`specialize` partially evaluates an ONNX graph before the compiler sees it:

* graph inputs bound with ``bind`` (``--set sr=16000``) become constants;
* graph inputs given a shape with ``shapes`` (``--shape input=1,576``) get that static shape, and every
  ``dim_param`` the file shares between inputs (``batch`` in ``input [batch, sequence]`` and
  ``state [2, batch, 128]``) takes the size the user gave it;
* every node whose inputs are all constant is folded (:func:`..fold.fold`); ``Shape``/``Size`` of a value
  whose shape is known (shape inference node by node) fold too, as do ``Gather``/``Slice``/``Concat``/
  ``Squeeze``/``Unsqueeze``/``Cast`` of partially known shapes;
* an ``If`` whose condition is constant is replaced by the taken branch: its nodes are evaluated in the
  scope of the ``If`` (outer names resolved, names that would clash renamed), nested ``If``\\ s likewise;
  the other branch is dropped without being looked at (Silero's 8 kHz branch does not type-check at
  576 samples). An ``If`` whose condition stays data-dependent is an error naming the node, its
  condition and the graph inputs it depends on, raised only if a graph output needs that ``If``;
* ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` with a constant that does not broadcast ``x`` to a larger
  shape become ``x`` (Silero's ``stateN = Concat(...) + Cast(sr * 0)``), and ``Identity`` is an alias.

The result is a flat, ``If``-free ONNX model with the same outputs as the original for the unbound
inputs (ONNX Runtime runs it: the tests compare both); only the nodes the graph outputs need are kept.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError, where
from ..fold import constant, fold
from ..graph import outer_reads
from .bind import bind_value, check_shape, dims_of, np_dtype

__all__ = ["needs_specialize", "specialize"]

#: ops folded on partially known integer vectors (shapes with unknown entries)
_PARTIAL_OPS = ("Gather", "Slice", "Concat", "Squeeze", "Unsqueeze", "Cast", "Identity")
#: float constants up to this many elements are shown to shape inference with their values
_SMALL = 64


@dataclass
class _C:
    """A constant value and the name it gets if an emitted node reads it."""

    arr: np.ndarray
    name: str


@dataclass
class _D:
    """A run-time value: its name in the emitted graph, element type (0 = unknown), shape (list of int or
    str/None per axis; None = unknown rank), the graph inputs it depends on, and for a 1-D integer
    vector the entries known at compile time (object array of int or None)."""

    name: str
    elem: int
    shape: list | None
    deps: frozenset = field(default_factory=frozenset)
    known: np.ndarray | None = None


@dataclass
class _Bad:
    """An output of an ``If`` whose condition is not constant: an error if a graph output needs it."""

    msg: str


def needs_specialize(model) -> bool:
    """The graph (or a subgraph) holds an ``If`` node."""
    return any(n.op_type == "If" for n in _all_nodes(model.graph))


def _all_nodes(g):
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.g is not None and a.HasField("g"):
                yield from _all_nodes(a.g)
            for sg in a.graphs:
                yield from _all_nodes(sg)


def specialize(model, bind: dict | None = None, shapes: dict | None = None):
    """Partially evaluate ``model`` (an ``onnx.ModelProto``) with graph inputs ``bind`` (name -> value)
    fixed to constants and ``shapes`` (name -> sizes) fixing input shapes; returns ``(model', info)``:
    the flat ``If``-free model reading the unbound inputs and writing the same outputs, and a dict with
    ``bound`` (name -> list value), ``shapes`` (input name -> sizes) and ``folded_ifs`` (how many ``If``
    nodes were replaced by a branch). Raises :class:`CompileError` for an unknown name, a bad value, a
    shape that contradicts the file, or an ``If`` whose condition is not constant."""
    return _Specializer(model, dict(bind or {}), dict(shapes or {})).run()


class _Specializer:
    def __init__(self, model, bind: dict, shapes: dict):
        self.model = model
        self.opset = {o.domain or "": o.version for o in model.opset_import}
        self.bind = bind
        self.shapes = shapes
        self.used: set[str] = set()
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.folded_ifs = 0
        self.depth = 0  # nesting of the If branch being inlined (0: the top-level graph)
        self.outs: set[str] = set()  # graph output names not yet written

    # ------------------------------------------------------------------ names
    def fresh(self, name: str) -> str:
        """A name not used yet in the flat graph (``name`` itself when it is free): a graph output's name
        goes only to the top-level node that writes it."""
        base = name or "v"
        if base in self.outs and self.depth == 0:
            self.outs.discard(base)
            return base
        out, k = base, 0
        while out in self.used or out in self.outs:
            k += 1
            out = f"{base}__{k}"
        self.used.add(out)
        return out

    def ref(self, v) -> str:
        """The emitted-graph name of value ``v`` (a constant becomes an initializer on first use)."""
        if isinstance(v, _C):
            if v.name not in self.inits:
                self.inits[v.name] = v.arr
            return v.name
        return v.name

    # ------------------------------------------------------------------ main
    def run(self):
        from onnx import helper, numpy_helper

        g = self.model.graph
        init_names = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in init_names]
        by_name = {i.name: i for i in inputs}
        for opt, table in (("--set", self.bind), ("--shape", self.shapes)):
            for name in table:
                if name not in by_name:
                    raise CompileError(
                        f"{opt} {name}: the graph has no input named {name!r} "
                        f"(inputs: {', '.join(by_name) or 'none'})"
                    )
        both = sorted(set(self.bind) & set(self.shapes))
        if both:
            raise CompileError(f"input {both[0]!r} is both bound (--set) and given a shape (--shape)")
        fixed = {n: check_shape(by_name[n], s) for n, s in self.shapes.items()}
        params: dict[str, int] = {}
        for n, s in fixed.items():
            for d, size in zip(dims_of(by_name[n]) or [], s, strict=False):
                if isinstance(d, str):
                    if params.get(d, size) != size:
                        raise CompileError(
                            f"--shape: the file names one size {d!r}, given as {params[d]} and {size}"
                        )
                    params[d] = size
        self.used.update(i.name for i in g.input)
        self.outs = {o.name for o in g.output} - self.used
        scope: dict = {}
        for t in g.initializer:
            scope[t.name] = _C(numpy_helper.to_array(t), t.name)
        new_inputs = []
        bound = {}
        for i in inputs:
            if i.name in self.bind:
                arr = bind_value(i, self.bind[i.name])
                scope[i.name] = _C(arr, i.name)
                bound[i.name] = arr.tolist()
                continue
            dims = fixed.get(i.name) or [
                params.get(d, d) if isinstance(d, str) else d for d in dims_of(i) or []
            ]
            shape = dims if (dims_of(i) is not None or i.name in fixed) else None
            elem = i.type.tensor_type.elem_type
            scope[i.name] = _D(i.name, elem, shape, frozenset([i.name]))
            new_inputs.append(helper.make_tensor_value_info(i.name, elem, shape))
        self.eval_graph(g, ChainMap(scope), top=True)
        outputs, out_vi = [], []
        for o in g.output:
            v = self.top[o.name]
            if isinstance(v, _Bad):
                raise CompileError(v.msg)
            if isinstance(v, _C) or v.name != o.name:
                self.nodes.append(helper.make_node("Identity", [self.ref(v)], [o.name], name=f"{o.name}:out"))
            outputs.append(o.name)
            out_vi.append(o)
        nodes = _live(self.nodes, outputs)
        needed = {x for n in nodes for x in list(n.input) + outer_reads(n)}
        inits = [numpy_helper.from_array(np.asarray(a), nm) for nm, a in self.inits.items() if nm in needed]
        graph = helper.make_graph(nodes, g.name or "specialized", new_inputs, out_vi, initializer=inits)
        m = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        info = {
            "bound": bound,
            "shapes": {k: list(v) for k, v in fixed.items()},
            "folded_ifs": self.folded_ifs,
        }
        return m, info

    def eval_graph(self, g, scope: ChainMap, top: bool = False) -> None:
        from onnx import numpy_helper

        if top:
            self.top = scope
        else:
            for t in g.initializer:
                scope[t.name] = _C(numpy_helper.to_array(t), self.fresh(t.name))
        for n in g.node:
            self.eval_node(n, scope)

    def eval_node(self, node, scope: ChainMap) -> None:
        op, dom = node.op_type, node.domain or ""
        vals = []
        for name in node.input:
            if not name:
                vals.append(None)
                continue
            if name not in scope:
                raise CompileError(f"{where(node)}: input {name!r} is not defined")
            vals.append(scope[name])
        bad = next((v for v in vals if isinstance(v, _Bad)), None)
        if bad is not None:
            for o in node.output:
                if o:
                    scope[o] = bad
            return
        if dom == "" and op == "If":
            self.eval_if(node, vals, scope)
            return
        if dom == "" and op == "Scan":
            self.scan(node, vals, scope)
            return
        if any(a.HasField("g") or a.graphs for a in node.attribute):
            raise CompileError(f"unsupported op {op!r} ({where(node)}): control flow is not compiled")
        if dom == "" and op == "Constant":
            self.set(node, scope, [constant(node)])
            return
        present = [v for v in vals if v is not None]
        random = op.startswith("Random") or op in ("Bernoulli", "Multinomial")
        if dom in ("", "ai.onnx") and not random and all(isinstance(v, _C) for v in present):
            self.set(node, scope, fold(node, [v.arr if v is not None else None for v in vals], self.opset))
            return
        if dom == "" and self.shape_fold(node, vals, scope):
            return
        if dom == "" and self.identity(node, vals, scope):
            return
        self.emit(node, vals, scope)

    def set(self, node, scope, arrs: list) -> None:
        for o, a in zip(node.output, arrs, strict=False):
            if o:
                scope[o] = _C(np.asarray(a), self.fresh(o))

    # ------------------------------------------------------------------ If
    def eval_if(self, node, vals, scope: ChainMap) -> None:
        cond = vals[0]
        if not isinstance(cond, _C):
            deps = sorted(cond.deps) if isinstance(cond, _D) else []
            msg = (
                f"{where(node)}: its condition {node.input[0]!r} is not constant once the inputs are bound"
                + (f" (it depends on graph input {', '.join(map(repr, deps))})" if deps else "")
                + "; bind the inputs it tests with --set NAME=VALUE, or fix the data shape with "
                "--shape NAME=SIZES"
            )
            for o in node.output:
                if o:
                    scope[o] = _Bad(msg)
            return
        c = np.asarray(cond.arr)
        if c.size != 1:
            raise CompileError(f"{where(node)}: condition of {c.size} elements")
        branch = "then_branch" if bool(c.ravel()[0]) else "else_branch"
        sub = next((a.g for a in node.attribute if a.name == branch), None)
        if sub is None:
            raise CompileError(f"{where(node)}: no {branch}")
        if len(sub.output) != len(node.output):
            raise CompileError(
                f"{where(node)}: {branch} has {len(sub.output)} outputs, the node {len(node.output)}"
            )
        child = scope.new_child()
        self.depth += 1
        self.eval_graph(sub, child)
        self.depth -= 1
        self.folded_ifs += 1
        for o, bo in zip(node.output, sub.output, strict=True):
            if not o:
                continue
            if bo.name not in child:
                raise CompileError(f"{where(node)}: {branch} output {bo.name!r} is not defined")
            scope[o] = child[bo.name]

    # ------------------------------------------------------------------ Scan
    def scan(self, node, vals, scope) -> None:
        """A ``Scan`` is copied as it is (the compiler compiles its body, :mod:`..ops.scan`): the outer
        values its body reads must keep their names in the flat graph (constants do)."""
        for name in dict.fromkeys(outer_reads(node)):
            v = scope.get(name)
            if v is None or isinstance(v, _Bad) or self.ref(v) != name:
                raise CompileError(
                    f"{where(node)}: its body reads the outer value {name!r}, which specializing "
                    "renames or removes"
                )
        self.emit(node, vals, scope)

    # ------------------------------------------------------------------ shapes
    def shape_fold(self, node, vals, scope) -> bool:
        """``Shape``/``Size`` of a known shape, and index ops on partially known shape vectors."""
        op = node.op_type
        if op in ("Shape", "Size"):
            v = vals[0]
            if not isinstance(v, _D) or v.shape is None:
                return False
            dims = np.array([d if isinstance(d, int) else None for d in v.shape], dtype=object)
            if op == "Size":
                if any(d is None for d in dims):
                    return False
                self.set(node, scope, [np.array(int(np.prod(dims.astype(np.int64))), np.int64)])
                return True
            at = {a.name: a.i for a in node.attribute}
            r = len(dims)
            s, e = at.get("start", 0), at.get("end", r)
            s = max(0, min(r, s + r if s < 0 else s))
            e = max(0, min(r, e + r if e < 0 else e))
            part = dims[s:e]
            if all(d is not None for d in part):
                self.set(node, scope, [part.astype(np.int64)])
            else:
                out = self.emit(node, vals, scope)
                out[0].known = part
            return True
        if op not in _PARTIAL_OPS or not any(isinstance(v, _D) and v.known is not None for v in vals):
            return False
        if any(isinstance(v, _D) and v.known is None for v in vals if v is not None):
            return False
        res = _partial(node, [_obj(v) if v is not None else None for v in vals])
        if res is None:
            return False
        if all(x is not None for x in np.asarray(res).ravel()):
            self.set(node, scope, [np.asarray(res).astype(np.int64)])
        else:
            out = self.emit(node, vals, scope)
            out[0].known = np.asarray(res, dtype=object)
        return True

    def identity(self, node, vals, scope) -> bool:
        """``Identity`` and ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` (no broadcast beyond x) alias x."""
        op = node.op_type
        if op == "Identity":
            scope[node.output[0]] = vals[0]
            return True
        if op not in ("Add", "Sub", "Mul", "Div") or len(vals) != 2:
            return False
        unit = 0 if op in ("Add", "Sub") else 1
        for k in (0, 1) if op in ("Add", "Mul") else (0,):
            x, c = vals[k], vals[1 - k]
            if isinstance(x, _D) and isinstance(c, _C) and x.shape is not None:
                arr = np.asarray(c.arr)
                if arr.ndim > len(x.shape) or not np.all(arr == unit):
                    continue
                tail = list(x.shape[len(x.shape) - arr.ndim :]) if arr.ndim else []
                if all(
                    s == 1 or (isinstance(d, int) and d == s) for d, s in zip(tail, arr.shape, strict=True)
                ):
                    if x.elem and np.dtype(np_dtype(x.elem)) == arr.dtype:
                        scope[node.output[0]] = x
                        return True
        return False

    # ------------------------------------------------------------------ emitting
    def emit(self, node, vals, scope) -> list:
        """Copy ``node`` into the flat graph (inputs renamed, outputs given fresh names) and infer the
        types and shapes of its outputs."""
        from onnx import helper

        ins = [self.ref(v) if v is not None else "" for v in vals]
        outs = [self.fresh(o) if o else "" for o in node.output]
        n2 = helper.make_node(node.op_type, ins, outs, name=node.name, domain=node.domain or None)
        n2.attribute.extend(node.attribute)
        self.nodes.append(n2)
        deps = frozenset().union(*[v.deps for v in vals if isinstance(v, _D)])
        types = _infer(n2, vals, self.opset)
        res = []
        for o, name, (elem, shape) in zip(node.output, outs, types, strict=False):
            if o:
                d = _D(name, elem, shape, deps)
                scope[o] = d
                res.append(d)
        return res


def _obj(v) -> np.ndarray:
    if isinstance(v, _C):
        return (
            np.asarray(v.arr).astype(object) if np.asarray(v.arr).dtype.kind in "iub" else np.asarray(v.arr)
        )
    return v.known


def _ints(a) -> list[int]:
    return [int(x) for x in np.asarray(a).ravel()]


def _partial(node, arrs: list) -> np.ndarray | None:
    """``node`` evaluated on object arrays whose unknown entries are None (index ops only)."""
    at = {a.name: (a.i if a.type == 2 else list(a.ints)) for a in node.attribute}
    op, x = node.op_type, arrs[0]
    try:
        if op in ("Identity", "Cast"):
            return x
        if op == "Gather":
            idx = np.asarray(arrs[1])
            if any(v is None for v in idx.ravel()):
                return None
            return np.take(x, idx.astype(np.int64), axis=at.get("axis", 0))
        if op == "Concat":
            if any(a is None for a in arrs):
                return None
            return np.concatenate([np.asarray(a, dtype=object).reshape(-1) for a in arrs])
        if op == "Slice":
            if (
                x.ndim != 1
                or len(arrs) < 3
                or any(a is not None and any(v is None for v in np.ravel(a)) for a in arrs[1:])
            ):
                return None
            s, e = _ints(arrs[1]), _ints(arrs[2])
            st = _ints(arrs[4]) if len(arrs) > 4 and arrs[4] is not None else [1]
            big = 2**62
            return x[slice(s[0], max(min(e[0], big), -big), st[0])]
        if op == "Unsqueeze":
            axes = _ints(arrs[1]) if len(arrs) > 1 and arrs[1] is not None else at.get("axes", [])
            for a in sorted(a + x.ndim + len(axes) if a < 0 else a for a in axes):
                x = np.expand_dims(x, a)
            return x
        if op == "Squeeze":
            axes = _ints(arrs[1]) if len(arrs) > 1 and arrs[1] is not None else at.get("axes")
            return np.squeeze(x, axis=tuple(axes) if axes else None)
    except (ValueError, IndexError, TypeError):
        return None
    return None


def _infer(node, vals: list, opset: dict) -> list[tuple[int, list | None]]:
    """(element type, shape) of each output of ``node`` by ONNX shape inference on the node alone;
    (0, None) where it cannot tell."""
    from onnx import helper, numpy_helper, shape_inference

    vis, inits = [], []
    seen: set[str] = set()
    for name, v in zip(node.input, vals, strict=False):
        if not name or v is None or name in seen:
            continue
        seen.add(name)
        if isinstance(v, _C):
            arr = np.asarray(v.arr)
            if arr.dtype.kind in "iub" or arr.size <= _SMALL:
                inits.append(numpy_helper.from_array(arr, name))
            else:
                vis.append(
                    helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)
                )
        elif isinstance(v, _D):
            shape = None if v.shape is None else [d if d is not None else None for d in v.shape]
            vis.append(helper.make_tensor_value_info(name, v.elem, shape))
    outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
    try:
        g = helper.make_graph([node], "infer", vis, outs, initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
        m = shape_inference.infer_shapes(m, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference failed: unknown types
        return [(0, None)] * len(node.output)
    got = {o.name: o for o in list(m.graph.output) + list(m.graph.value_info)}
    res = []
    for o in node.output:
        vi = got.get(o)
        if vi is None or not vi.type.HasField("tensor_type"):
            res.append((0, None))
            continue
        res.append((vi.type.tensor_type.elem_type, dims_of(vi)))
    return res


def _live(nodes: list, outputs: list) -> list:
    prod = {o: n for n in nodes for o in n.output if o}
    keep: set[int] = set()
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        n = prod.get(name)
        if n is not None and id(n) not in keep:
            keep.add(id(n))
            stack.extend(i for i in list(n.input) + outer_reads(n) if i)
    return [n for n in nodes if id(n) in keep]
