"""The retrieval step's index as an ONNX graph: MatMul against the catalogue embeddings (held as
an initialiser), then TopK. ONNX Runtime runs it on CPU; the same graph runs on Triton's
onnxruntime or TensorRT backends on a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fusionrank.export.graphs import ONNX_OPSET


def retrieval_graph(embeddings: np.ndarray, path: str | Path, k: int | None = None) -> None:
    """query [batch, dim] float32, k [1] int64 → similarity, rows [batch, k] (best first).
    With `k` given, k is a constant of the graph and `query` its only input: every input then
    has a batch dimension, as Triton's native backends want (the GPU repository)."""
    products, dim = embeddings.shape
    index = numpy_helper.from_array(np.ascontiguousarray(embeddings.T, dtype=np.float32),
                                    "catalogue_t")
    inputs = [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", dim])]
    constants = [index]
    if k is None:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    elif not 1 <= k <= products:
        raise ValueError(f"k = {k} must be between 1 and the catalogue's {products} products")
    else:
        constants.append(numpy_helper.from_array(np.array([k], dtype=np.int64), "k"))
    pool = "k" if k is None else k
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["query", "catalogue_t"], ["scores"]),
         helper.make_node("TopK", ["scores", "k"], ["similarity", "rows"], axis=1,
                          largest=1, sorted=1)],
        "retrieval", inputs,
        [helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["batch", pool]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch", pool])],
        constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    helper.set_model_props(model, {"products": str(products)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
