"""The compiler proper: evaluates the ONNX graph symbolically, node by node, dispatching each node to
the handler registered for its op type (:mod:`.ops`), and returns the plan the handlers built.

Order of work in :meth:`Compiler.run`: attention fusion (:mod:`.passes.attention`), pruning to the nodes
the output depends on, input classification (:mod:`.passes.state`), evaluation, the output's
materialization, and the state-wiring check of step graphs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CompileError, where
from .fold import constant, fold
from .graph import attrs, live_nodes, producers, reader_counts
from .ops import handler
from .ops.recurrent import RECURRENT_OPS, STATE_SLOTS
from .ops.registry import PLUMBING
from .passes import pairing, slots
from .passes import state as state_pass
from .passes.attention import fuse_attention
from .plan import PlanBuilder
from .values import Const, Data, Multi, State, Sym, TimePadded, axes_desc

__all__ = ["Compiler", "compile_graph"]

#: domains whose ops have handlers (the ONNX default domain, ORT's contrib ops, the compiler's own)
_DOMAINS = ("", "ai.onnx", "com.microsoft", "edgernn")
#: values that make a plumbing node's output data (a state joined with them is read from its slot)
_DATA = (Data, Multi, TimePadded)


class Compiler:
    """The state of one compilation: the value table ``env`` (ONNX value name -> value), the ``plan``
    being built, and what the passes record (state inputs/feeds/codes, fused attention nodes, notes)."""

    def __init__(
        self, model, output: str | list[str] | None, state: dict | None = None, rewire: set | None = None
    ):
        self.model = model
        self.g = model.graph
        self.opset = {o.domain or "": o.version for o in model.opset_import}
        self.plan = PlanBuilder()
        self.env: dict[str, Any] = {}
        self.input_name: str | None = None
        self.input_syms: list = []
        self.input_kind = "features"
        self.vocab_size: int | None = None
        self.state_inputs: list[str] = []
        self.notes: list[str] = []
        self.fused: dict[str, dict] = {}  # fused attention pooling nodes
        self.state_feeds: list[tuple] = []  # (state input, layer index, "h"|"c", [D, H] positions or None)
        self.state_codes: dict[str, Any] = {}  # Y_h / Y_c output name -> Bcast of codes of (layer, h|c, unit)
        self.state_vis: dict[str, Any] = {}  # state input name -> its ValueInfoProto
        #: state input -> position of its ``state`` op (a state slot, :mod:`.passes.slots`)
        self.slots: dict[str, int] = {}
        self.slotty: set[str] = set()  # the state inputs read as data (:func:`.passes.state.slot_inputs`)
        #: state inputs whose recurrent layers take their state from the state output at the end of each
        #: step (its output is not their own Y_h/Y_c: :func:`.passes.slots.resolve_recurrent`)
        self.rewire: set[str] = set(rewire or ())
        #: position of a MatMulInteger's dense layer -> (layer, int weights, zero point, exact) awaiting its
        #: scale (ORT's quantizer may interleave several MatMulIntegers before their scale Muls)
        self.pending_q: dict[int, tuple] = {}
        self.readers: dict[str, int] = {}  # value name -> how many computations read it
        self._concats: dict[int, tuple] = {}  # id(Multi) -> (the Multi, its plan value): one copy each
        outs = [o.name for o in self.g.output]
        #: (state input, state output) pairs of a step graph (:mod:`.passes.pairing`)
        self.state_pairs = pairing.choose_pairs(self.g, state, output)
        if output is None:  # every graph output that is not a state output, in graph order
            chosen = [o for o in outs if o not in {so for _, so in self.state_pairs}]
            if not chosen:
                raise CompileError("the graph has no outputs")
        else:
            chosen = [output] if isinstance(output, str) else list(output)
            if not chosen or len(set(chosen)) != len(chosen) or not all(isinstance(o, str) for o in chosen):
                raise CompileError(f"output must name distinct graph outputs, got {output!r}")
        #: the graph outputs compiled, in order (the plan's outputs); ``output`` is the first
        self.outputs = chosen
        self.output = chosen[0]
        self.ignored_outputs = [o for o in outs if o not in chosen]
        #: every value name a node reads or the plan outputs (set in :meth:`run`): a recurrent node's
        #: ``Y_c`` is computed only when it is used
        self.used: set[str] = set()

    def run(self) -> None:
        """Compile the graph; the results are left in ``plan``, ``out_value``, ``sequence`` and the rest."""
        from onnx import numpy_helper

        g = self.g
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for name, arr in inits.items():
            self.env[name] = Const(np.asarray(arr))
        graph_nodes, self.fused = fuse_attention(list(g.node), inits, self.opset)
        prod = producers(graph_nodes)
        for o in self.outputs:
            if o not in prod and o not in self.env and not any(i.name == o for i in g.input):
                raise CompileError(f"the graph has no value named {o!r}")
        # state pairs whose input is read as data (not only through plumbing into recurrent state
        # slots) become state slots: their state outputs are computed too (the slot's write-back)
        self.slotty = slotty = state_pass.slot_inputs(g, graph_nodes, self.outputs, self.state_pairs, inits)
        writes = [o for i, o in self.state_pairs if i in slotty | self.rewire and o not in self.outputs]
        nodes, seen = live_nodes(graph_nodes, prod, self.outputs + writes)
        self.used = {i for n in nodes for i in n.input if i} | set(self.outputs)
        used_inputs = [i for i in g.input if i.name not in inits and i.name in seen]
        paired = {i for i, _ in self.state_pairs}
        data_inputs, state_inputs = state_pass.classify_inputs(used_inputs, nodes, self.outputs, paired)
        for i in state_inputs:
            self.env[i.name] = State(i.name, state_pass.state_index(i))
            self.state_inputs.append(i.name)
            self.state_vis[i.name] = i
        self._bind_input(data_inputs[0])
        self.readers = reader_counts(nodes, [o.name for o in g.output])
        for n in nodes:
            self.eval_node(n)
        for o in self.outputs:
            if isinstance(self.env.get(o), State):  # a graph output that is the state (a delay line)
                self.env[o] = slots.read(self, self.env[o], f"output {o!r}")
        slots.resolve_writes(self)
        slots.resolve_recurrent(self)
        outs = []
        for o in self.outputs:
            v = self.env.get(o)
            if isinstance(v, Multi):
                v = self._concat_output(v, f"output node {o!r}")
            if isinstance(v, Multi):
                raise CompileError(
                    f"output {o!r} is a Concat of values of different ops along an inner feature axis "
                    "(only along the outermost one, e.g. h_n of a multi-layer LSTM, is one plan value)"
                )
            if not isinstance(v, Data):
                raise CompileError(f"output {o!r} does not depend on the model input")
            outs.append(v)
        if len(outs) == 1:
            self._finish(outs[0])
        else:
            self._finish_several(outs)
        if self.state_feeds or self.state_pairs:
            state_pass.check_wiring(self, prod)

    def _bind_input(self, vi) -> None:
        """The data input: token ids [batch, time] (int) or float features [..., features]."""
        from onnx import TensorProto

        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        self.input_name = vi.name
        if tt.elem_type in (TensorProto.INT64, TensorProto.INT32):
            if len(dims) not in (1, 2):
                raise CompileError(
                    f"integer input {vi.name!r} must be [batch, time] token ids, got rank {len(dims)}"
                )
            syms = [Sym(f"{vi.name}:{k}", d) for k, d in enumerate(dims)]
            self.input_syms = syms
            self.plan.in_size = 1
            self.input_kind = "tokens"
            self.env[vi.name] = Data(list(syms), np.arange(1), np.zeros(1, bool), 0, tokens=True)
            return
        if tt.elem_type != TensorProto.FLOAT:
            raise CompileError(f"input {vi.name!r} has element type {tt.elem_type}; float32 is supported")
        if len(dims) < 1 or dims[-1] is None or dims[-1] <= 0:
            raise CompileError(f"input {vi.name!r} needs a static last (feature) dimension, got {dims}")
        if len(dims) > 3:
            raise CompileError(f"input {vi.name!r} has rank {len(dims)}; at most [batch, time, features]")
        syms = [Sym(f"{vi.name}:{k}", d) for k, d in enumerate(dims[:-1])]
        self.input_syms = syms
        self.plan.in_size = dims[-1]
        self.input_kind = "features"
        self.env[vi.name] = Data(syms + [dims[-1]], np.arange(dims[-1]), np.zeros(dims[-1], bool), 0)

    def eval_node(self, node) -> None:
        """Evaluate one node: ``Constant``s and nodes with only constant inputs are folded, state flows
        through plumbing, anything else goes to the op's handler (an error when there is none)."""
        op = node.op_type
        dom = node.domain or ""
        vals = [self.env.get(i) if i else None for i in node.input]
        for name, v in zip(node.input, vals, strict=False):
            if name and v is None:
                raise CompileError(f"{where(node)}: input {name!r} is not defined")
        if op == "Constant" and dom == "":
            self._set(node, [Const(constant(node))])
            return
        present = [v for v in vals if v is not None]
        if (
            dom in ("", "ai.onnx")
            and all(isinstance(v, Const) for v in present)
            and op not in ("LSTM", "GRU", "RNN")
        ):
            self._set(node, [Const(a) for a in fold(node, [v.arr if v else None for v in vals], self.opset)])
            return
        if any(isinstance(v, State) for v in present):
            if op not in RECURRENT_OPS and op in PLUMBING and not any(isinstance(v, _DATA) for v in present):
                res = state_pass.propagate(self, node, vals)  # state into recurrent slots
                lost = any(isinstance(r, State) and r.ix is None for r in res)
                srcs = {v.src for v in present if isinstance(v, State)}
                if not (lost and srcs <= self.slotty):
                    self._set(node, res)
                    return
                # positions not followed through this node, of a state read as data: its slot's value
                # goes through the node as data
            # state read as data (arithmetic, or joined with data): the value of its state slot
            keep = STATE_SLOTS if op in RECURRENT_OPS else ()
            vals = [
                slots.read(self, v, where(node)) if isinstance(v, State) and k not in keep else v
                for k, v in enumerate(vals)
            ]
        fn = handler(op)
        if dom not in _DOMAINS or fn is None:
            raise CompileError(
                f"unsupported op {(dom + '.') if dom else ''}{op!r} ({where(node)}) on the model's data path"
            )
        multi = any(isinstance(v, Multi) for v in vals)
        if multi and op not in PLUMBING:  # a Concat of values of different ops, read by arithmetic
            vals, multi = self._joined(vals, node), False
        # fusions rewrite the layer that made a value: only when this node is that value's one reader
        self.plan.exclusive = all(
            self.readers.get(name, 0) <= 1
            for name, v in zip(node.input, vals, strict=False)
            if isinstance(v, Data)
        )
        n_layers = len(self.plan.layers)
        try:
            res = fn(self, node, vals, attrs(node))
        except CompileError:
            # plumbing picks parts of a Concat lazily (h_n[-1] of a multi-layer LSTM); what it cannot
            # pick from (a Split across the parts...) reads the Concat as one plan value
            if not multi or len(self.plan.layers) != n_layers:
                raise
            res = fn(self, node, self._joined(vals, node), attrs(node))
        self._set(node, res if isinstance(res, list) else [res])

    def _joined(self, vals: list, node) -> list:
        """``vals`` with each Concat of values of different ops made one plan value where it can be."""
        return [self._concat_output(v, where(node)) if isinstance(v, Multi) else v for v in vals]

    def _set(self, node, values: list) -> None:
        for name, v in zip(node.output, values, strict=False):
            if name:
                self.env[name] = v

    def _finish(self, out: Data) -> None:
        """Materialize the output value as the plan's output vector and settle the sequence mode."""
        out = self.plan.materialize(out, f"output node {self.output!r}")
        if out.quant is not None:
            raise CompileError("the output is an unscaled quantized matmul result")
        feats = [d for d in out.axes if not isinstance(d, Sym)]
        n_out = int(np.prod(feats, dtype=np.int64)) if feats else 1
        if not self.plan.layers:
            raise CompileError("the graph has no layers between its input and output")
        if n_out != self.plan.tip_size():
            raise CompileError(f"internal: output features {n_out} != plan size {self.plan.tip_size()}")
        self.sequence = _sequence(out)
        self.out_value = out
        self.out_values = [out]
        self.out_positions = [len(self.plan.layers)]

    def _concat_output(self, m: Multi, what: str) -> Data | Multi:
        """A ``Concat`` of data values of different ops along its outermost feature axis, read by a node
        or a graph output (``h_n``/``c_n`` of a multi-layer LSTM: the layers' ``Y_h`` along the direction
        axis; a branch joined by Concat), as one value of the plan (:meth:`PlanBuilder.concat`, made
        once per Concat); any other Concat stays a Multi (refused by its reader)."""
        done = self._concats.get(id(m))
        if done is not None and done[0] is m:
            return done[1]
        parts = m.parts
        if not all(isinstance(p, Data) for p in parts):
            return m
        p0 = parts[0]
        feats = [k for k, d in enumerate(p0.axes) if not isinstance(d, Sym)]
        before = [p0.axes[k] for k in feats if k < m.axis]
        same = all((p.last, p.step) == (p0.last, p0.step) and len(p.axes) == len(p0.axes) for p in parts)
        if not same or any(d != 1 for d in before):
            return m
        pos = self.plan.concat(parts, what)
        axes = list(p0.axes)
        axes[m.axis] = sum(p.axes[m.axis] for p in parts)
        n = self.plan.value_size(pos)
        out = Data(axes, np.arange(n), np.zeros(n, bool), pos, p0.last, p0.step)
        self._concats[id(m)] = (m, out)
        return out

    def _finish_several(self, outs: list[Data]) -> None:
        """Each output a value of the plan (its own, or a ``gather`` copy in its feature order), with its
        own sequence mode; the first output's mode is ``sequence``."""
        self.out_positions = []
        copies: dict[tuple, int] = {}  # (value, index map) -> the position of its copy (Y and a forward Y_h)
        for name, v in zip(self.outputs, outs, strict=True):
            what = f"output node {name!r}"
            if v.quant is not None:
                raise CompileError(f"{what}: an unscaled quantized matmul result")
            self.plan.resolve_final(v)
            key = (v.pos, tuple(v.perm.tolist()))
            if key in copies and not v.bad.any():
                self.out_positions.append(copies[key])
                continue
            pos = self.plan.value_input(v, what)
            if pos == 0:  # the model input itself: the output is a copy
                pos = self.plan.gather(v, what)
            copies[key] = pos
            self.out_positions.append(pos)
        if not self.plan.layers:
            raise CompileError("the graph has no layers between its input and output")
        self.out_values = outs
        self.out_value = outs[0]
        self.sequence = _sequence(outs[0])


def _sequence(out: Data) -> str:
    """The sequence mode of an output value: many_to_many when it keeps a time axis (or every step)."""
    has_t = any(isinstance(d, Sym) and d.role == "T" for d in out.axes)
    return "many_to_many" if (has_t or not out.last) else "many_to_one"


def as_graph(plan: dict, inputs: list[list[int]], outputs: list[tuple[int, dict]] | None = None) -> dict:
    """The format-2 form of the compiled ``plan`` whose layer i reads the values at positions
    ``inputs[i]`` (0: the model input, j + 1: layer j's output). Value names: ``"input"``, and
    ``"<layer name>:y"``. ``outputs``: for a plan of several outputs, (position, output fields) of each
    in order: the plan gets ``outputs`` (docs/ARTIFACT.md), and ``output`` is the first."""
    from ...plan import NOT_ATTRS

    layers = plan["layers"]
    names = ["input"] + [f"{lay['name']}:y" for lay in layers]
    values = {"input": {"shape": [plan["input"]["size"]]}}
    ops = []
    for lay, ins, out in zip(layers, inputs, names[1:], strict=True):
        values[out] = {"shape": [lay["output_size"]]}
        attrs = {k: x for k, x in lay.items() if k not in NOT_ATTRS}
        for key in ("next", "h_next", "c_next"):  # state write-backs: value positions -> names
            if attrs.get(key) is not None:
                attrs[key] = names[attrs[key]]
        ops.append(
            {
                "kind": lay["kind"],
                "name": lay["name"],
                "inputs": [names[p] for p in ins],
                "outputs": [out],
                "attrs": attrs,
                "tensors": dict(lay["tensors"]),
            }
        )
    new = {k: v for k, v in plan.items() if k != "layers"}
    new.update(
        format_version=2,
        input={**plan["input"], "value": "input"},
        output={**plan["output"], "value": names[-1]},
        values=values,
        ops=ops,
    )
    if outputs:
        new["outputs"] = [{**fields, "value": names[pos]} for pos, fields in outputs]
        new["output"] = {k: v for k, v in new["outputs"][0].items() if k != "name"}
    return new


class _compiled:
    """A :class:`Compiler` run that, when a state output does not return its recurrent layers' own state
    (:class:`~.passes.state.WiringError`), compiles again with those layers' states set from the state
    outputs (``rewire``) — so any step graph's state wiring streams as ONNX Runtime runs it."""

    def __init__(self, model, output, state):
        self.args = (model, output, state)
        self.c = Compiler(model, output, state)

    def run(self) -> None:
        rewire: set = set()
        for _ in range(8):  # each retry adds the inputs that failed; bounded by the state inputs
            try:
                self.c.run()
                return
            except state_pass.WiringError as e:
                if e.inputs <= rewire:
                    raise CompileError(str(e)) from None
                rewire |= e.inputs
                self.c = Compiler(*self.args, rewire=rewire)
        self.c.run()

    def __getattr__(self, name):
        return getattr(self.c, name)


def compile_graph(
    model,
    output: str | list[str] | None = None,
    source: str = "model.onnx",
    sha256: str = "",
    *,
    bind: dict | None = None,
    shapes: dict | None = None,
    state: dict | None = None,
) -> dict:
    """Compile an in-memory ``onnx.ModelProto`` (external data already loaded) into ``(plan, tensors)``.

    ``bind``: graph input name -> value (a number or array) fixed at compile time and folded; ``shapes``:
    graph input name -> sizes for inputs the file leaves open; with either, or when the graph holds an
    ``If``, the graph is first specialized (:mod:`.passes.specialize`: bindings, shapes, constant ``If``
    conditions inlined); LSTM steps written as plain ops are fused into ``LSTM`` nodes
    (:mod:`.passes.cells`). ``state``: state input name -> state output name (default: found automatically,
    :mod:`.passes.pairing`).

    Returns a dict with ``plan``, ``tensors`` (float32 arrays), ``exact_int8`` (tensor name ->
    (int8 q, float32 per-row scale) for weights that were already symmetric int8 in the source),
    ``io`` (input/output names and axis roles: "T" time, "B" batch, "N" independent rows, ints = feature
    axes; with several outputs also ``outputs`` and ``outputs_axes``), ``ignored_outputs``,
    ``state_inputs``, ``state_pairs`` ([input, output] lists), ``bound`` (input name -> value as a list),
    ``shapes`` (input name -> sizes) and ``notes``. ``output``: the graph output to compile, or a list of
    them (default: every output that is not a state output, in graph order: a plan of several outputs).
    """
    from ... import __version__
    from .frontend import prepare

    model, spec = prepare(model, bind, shapes)
    c = _compiled(model, output, state)
    try:
        c.run()
    except CompileError as e:
        if output is not None or len(c.outputs) < 2:
            raise
        # every output by default: when one of the others cannot be compiled, the first alone (as a
        # graph compiled before models had several outputs), saying why
        dropped = c.outputs[1:]
        c = _compiled(model, c.outputs[0], state)
        c.run()
        c.notes.append(f"graph outputs {dropped} not compiled (only {c.output!r}): {e}")
    if spec["fused_cells"]:
        c.notes.insert(
            0, f"{spec['fused_cells']} recurrent step(s) written as plain ops fused into LSTM/GRU/RNN nodes"
        )
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn", "version": __version__, "source": source, "source_sha256": sha256},
        "input": {"kind": c.input_kind, "size": c.plan.in_size},
        "output": {"size": c.plan.tip_size(), "sequence": c.sequence, "labels": None},
        "quantization": "none",
        "layers": c.plan.layers,
    }
    if c.input_kind == "tokens":
        plan["input"]["vocab_size"] = c.vocab_size
    in_axes = axes_desc(c.input_syms) + ([c.plan.in_size] if c.input_kind == "features" else [])
    io = {
        "input": c.input_name,
        "input_axes": in_axes,
        "output": c.output,
        "output_axes": axes_desc(c.out_value.axes),
    }
    if len(c.outputs) > 1:
        io["outputs"] = list(c.outputs)
        io["outputs_axes"] = [axes_desc(v.axes) for v in c.out_values]
    # how to run the source file as the artifact runs (edgernn bench feeds ONNX Runtime with these):
    # its state pairs as found or named, the inputs bound at compile time, the sizes given to open inputs
    source_run = {
        "state_pairs": [[i, o] for i, o in c.state_pairs],
        "bound": spec["bound"],
        "shapes": spec["shapes"],
    }
    plan["source_io"] = {**io, **source_run}
    if len(c.outputs) > 1:
        fields = [
            {"name": o, "size": c.plan.value_size(p), "sequence": _sequence(v), "labels": None}
            for o, p, v in zip(c.outputs, c.out_positions, c.out_values, strict=True)
        ]
        plan["output"] = {k: v for k, v in fields[0].items() if k != "name"}
        plan = as_graph(plan, c.plan.inputs, list(zip(c.out_positions, fields, strict=True)))
    elif not c.plan.is_chain() or c.rewire:
        plan = as_graph(plan, c.plan.inputs)
    return {
        "plan": plan,
        "tensors": c.plan.tensors,
        "exact_int8": c.plan.exact_int8,
        "io": io,
        "ignored_outputs": c.ignored_outputs,
        "state_inputs": c.state_inputs,
        "state_pairs": [[i, o] for i, o in c.state_pairs],
        "bound": spec["bound"],
        "shapes": spec["shapes"],
        "notes": c.notes,
    }
