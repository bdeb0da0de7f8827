"""The ONNX -> ``.ernn`` compiler.

:func:`compile_onnx` reads an ONNX graph, evaluates it *symbolically* and maps it onto the layer chain
of an ``.ernn`` plan (docs/ARTIFACT.md, docs/COMPILER.md). Every value of the graph becomes one of
(:mod:`.values`):

* a constant (initializers, ``Constant`` nodes, and every subgraph that depends only on them: these are
  folded by :mod:`.fold`, so the Concat-built weights of the dynamo exporter become plain tensors);
* a *shape* value (the output of ``Shape`` and of arithmetic on it), whose entries are integers or the
  symbolic batch/time axes of the input;
* a *broadcast constant* (``ConstantOfShape``/``Expand`` of a constant over a symbolic shape, e.g. the
  zero initial state the exporters build from the batch size);
* a *state* value (a graph input that feeds only ``initial_h``/``initial_c``: the step graph's state,
  kept by the stream at run time, starting at zero);
* the *data* value: the activations flowing from the model's input. It knows which of its axes are the
  symbolic time (T) and batch (B) axes, and which are feature axes; the feature vector is the row-major
  flattening of the feature axes, an index map ``perm`` into the output vector of the plan built so far.

Layout of the package:

* :mod:`.load`: reading the file, external data only from inside the model's own folder (no absolute
  paths, no ``..``, no symlink leaving the folder); ``Loop``/``Scan`` are refused;
* :mod:`.frontend`: what the compiler reads — the graph specialized to the user's bindings and shapes
  (:mod:`.passes.specialize`: constants folded, ``If`` with a constant condition inlined), plain-op LSTM
  steps fused (:mod:`.passes.cells`), and the data input and state pairs (:mod:`.passes.pairing`);
* :mod:`.fold`, :mod:`.values`, :mod:`.graph`: constant folding, the value kinds, graph reading;
* :mod:`.ops`: one module per op family, each handler registered by ONNX op type
  (:mod:`.ops.registry`): ``recurrent`` (LSTM/GRU/RNN/DynamicQuantizeLSTM), ``linear`` (Gemm/MatMul),
  ``elementwise`` (Add/Sub/Mul/Div with constants), ``quantized`` (ORT's dynamic quantization),
  ``activations``, ``embedding`` (Gather of a table by token ids, OneHot), ``attention``, ``shape``
  (Shape/Reshape/Flatten/Squeeze/Unsqueeze/Expand/Cast/...), ``indexing`` (Transpose/Slice/Gather/
  Split/Concat);
* :mod:`.passes`: specialization, cell fusion, attention fusion, state pairs (pairing, input
  classification, state-wiring check), layer fusion;
* :mod:`.plan`: the layer chain the handlers emit into; :mod:`.compiler`: the evaluation loop and
  :func:`compile_graph`; :mod:`.api`: :func:`compile_onnx`.

Anything the compiler cannot map exactly is a :class:`CompileError` naming the op and the node.
Selecting the last time step (``Gather``/``Slice`` with index -1 on the time axis) makes the model
``many_to_one``; a graph whose output keeps the time axis is ``many_to_many``. ``Y_h`` of a forward
recurrent node is its last step; when the units of a reverse direction of ``Y_h`` are used, a ``final`` op
reading the node's output selects them at time 0, their last step (:meth:`.plan.PlanBuilder.resolve_final`).
``Y_c`` is a final cell state the plan has no output for: using it is an error naming it.
"""

from .api import compile_onnx
from .compiler import compile_graph
from .errors import CompileError
from .frontend import front_end
from .load import load_model

__all__ = ["CompileError", "compile_graph", "compile_onnx", "front_end", "load_model"]
