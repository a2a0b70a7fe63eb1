"""The retrieval step's index as an ONNX graph: MatMul against the catalogue embeddings (held as
an initialiser), then TopK. ONNX Runtime runs it on CPU; the same graph runs on Triton's
onnxruntime or TensorRT backends on a GPU.

`int8_retrieval_graph` is the CPU's faster twin with the same answers: a shortlist by an 8-bit
product, rescored exactly. At a few queries a call, retrieval costs what reading the catalogue
costs (70 MB of float32 for 45,782 products); 8-bit reads a quarter of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fusionrank.core import artefacts
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
    with artefacts.replacing(path) as temporary:
        onnx.save(model, str(temporary))


SHORTLIST = 3  # int8_retrieval_graph rescores SHORTLIST · k products by their exact cosine
# The query's 7-bit range (uint8 1..127 around 64). On x86 CPUs without VNNI, ONNX Runtime's
# uint8 × int8 product (VPMADDUBSW) adds two products in saturating 16 bits: 255 · 127 · 2
# overflows, which silently reorders the shortlist; 127 · 127 · 2 = 32,258 does not. The
# catalogue keeps its 8 bits. (ONNX Runtime's quantisation docs: "reduce_range" / U8U8.)
QUERY_LEVELS = 63


def int8_retrieval_graph(embeddings: np.ndarray, path: str | Path) -> None:
    """query [batch, dim] float32, k [1] int64, catalogue [products, dim] float32 (the
    embeddings themselves, fed memory-mapped rather than copied into the graph) → similarity,
    rows [batch, k], best first, as `retrieval_graph` gives them.

    The graph holds the catalogue in int8, each product with its own scale. Each query is
    quantised on its own (symmetric, 7 bits: see QUERY_LEVELS; its own scale: a query's
    shortlist does not depend on its batch), its 8-bit products with the whole catalogue
    (MatMulInteger) pick its SHORTLIST · k best, and those are rescored exactly against the
    float32 catalogue. The exact top k is missed only if one of its products falls below rank
    SHORTLIST · k by the 8-bit product (search_fused.md reports the served candidates against
    exact ones)."""
    products, dim = embeddings.shape
    catalogue = np.asarray(embeddings, dtype=np.float32)
    scale = np.maximum(np.abs(catalogue).max(axis=1), 1e-12) / 127.0
    quantised = np.clip(np.round(catalogue / scale[:, None]), -127, 127).astype(np.int8)
    constants = [numpy_helper.from_array(value, name) for name, value in {
        "catalogue_int8_t": np.ascontiguousarray(quantised.T),
        "catalogue_scale": scale.astype(np.float32)[None, :],
        "shortlist_factor": np.array([SHORTLIST], dtype=np.int64),
        "products": np.array([products], dtype=np.int64),
        "zero_point": np.array(QUERY_LEVELS + 1, dtype=np.uint8),
        "levels": np.array(QUERY_LEVELS, dtype=np.float32),
        "offset": np.array(QUERY_LEVELS + 1, np.float32),
        "low": np.array(-QUERY_LEVELS, dtype=np.float32),
        "high": np.array(QUERY_LEVELS, dtype=np.float32),
        "tiny": np.array(1e-12, dtype=np.float32),
        "last_axis": np.array([-1], dtype=np.int64), "middle": np.array([1], dtype=np.int64),
    }.items()]
    node = helper.make_node
    nodes = [
        # Each query as uint8 around 64, its own scale: max |component| / QUERY_LEVELS.
        node("Abs", ["query"], ["magnitude"]),
        node("ReduceMax", ["magnitude"], ["largest"], axes=[1], keepdims=1),
        node("Max", ["largest", "tiny"], ["bounded"]),
        node("Div", ["bounded", "levels"], ["query_scale"]),
        node("Div", ["query", "query_scale"], ["scaled"]),
        node("Round", ["scaled"], ["rounded"]),
        node("Clip", ["rounded", "low", "high"], ["clipped"]),
        node("Add", ["clipped", "offset"], ["shifted"]),
        node("Cast", ["shifted"], ["query_uint8"], to=TensorProto.UINT8),
        # The 8-bit products with every product, back to cosine units.
        node("MatMulInteger", ["query_uint8", "catalogue_int8_t", "zero_point"], ["counts"]),
        node("Cast", ["counts"], ["counts_float"], to=TensorProto.FLOAT),
        node("Mul", ["counts_float", "query_scale"], ["partly_scaled"]),
        node("Mul", ["partly_scaled", "catalogue_scale"], ["approximate"]),
        # The shortlist (ties by the lower row), rescored exactly: elementwise, per query.
        node("Mul", ["k", "shortlist_factor"], ["wanted"]),
        node("Min", ["wanted", "products"], ["shortlist"]),
        node("TopK", ["approximate", "shortlist"], ["_", "shortlisted"], axis=1, largest=1,
             sorted=1),
        node("Gather", ["catalogue", "shortlisted"], ["vectors"], axis=0),
        node("Unsqueeze", ["query", "middle"], ["query_row"]),
        node("Mul", ["vectors", "query_row"], ["terms"]),
        node("ReduceSum", ["terms", "last_axis"], ["exact"], keepdims=0),
        node("TopK", ["exact", "k"], ["similarity", "places"], axis=1, largest=1, sorted=1),
        node("GatherElements", ["shortlisted", "places"], ["rows"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "int8_retrieval",
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", dim]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("catalogue", TensorProto.FLOAT, [products, dim])],
        [helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["batch", "k"]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch", "k"])],
        constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    helper.set_model_props(model, {"products": str(products)})
    onnx.checker.check_model(model)
    with artefacts.replacing(path) as temporary:
        onnx.save(model, str(temporary))
