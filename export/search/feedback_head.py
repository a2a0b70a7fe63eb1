"""Export the feedback head to ONNX, as one graph, and check it against the trained model.

Graph: query [q, d] float32 (one row per query), owner [n] int64 (the query row of each
(query, candidate) pair), product [n, d] float32, features [n, F] float32 →
    grade [n]    the blend the server uses: (1 − w)·network + w·trees
    network [n]  the averaged networks alone
    trees [n]    the boosted trees alone (skl2onnx: an ai.onnx.ml TreeEnsemble node)
The parts are outputs too, so `fusionrank evaluate` measures each one from the served file.

The networks are written node by node from their weights rather than traced: the first layer
reads [q, p, q ⊙ p, |q − p|], and its query share Wq·q is computed once per query (then
gathered for its candidates) instead of once per pair; the heads' layers run as one matrix
product each (block-diagonal where a head reads only its own hidden units).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from fusionrank.core.encoding import onnx_session
from fusionrank.core.search.runtime import HEAD_OUTPUT
from fusionrank.export.graphs import ONNX_OPSET, check_parity

PARTS = ("network", "trees")  # each part alone, beside the blend
OUTPUTS = (HEAD_OUTPUT, *PARTS)
ML_OPSET = 3  # ai.onnx.ml, for the trees


class BlendedHead(Protocol):
    """What the export needs of a trained head (training.search.feedback.FeedbackModel)."""

    network: torch.nn.Module  # (query, product, features) → grade
    trees: Any  # a fitted scikit-learn regressor over the features
    tree_share: float

    def predict_parts(self, query: np.ndarray, product: np.ndarray,
                      features: np.ndarray) -> Mapping[str, np.ndarray]: ...


def export_feedback_head(model: BlendedHead, path: str | Path,
                         check: tuple[np.ndarray, np.ndarray, np.ndarray],
                         tolerance: float = 1e-4) -> float:
    """Write the ONNX graph and return the largest |ONNX − trained model| over the `check`
    pairs (query, product, features: one row per pair) and all three outputs; fail above
    `tolerance`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _blend(_network_graph(model.network, features=check[2].shape[1]),
                   _trees_graph(model.trees, check[2].shape[1]), model.tree_share)
    onnx.checker.check_model(graph)
    onnx.save(graph, path)
    return parity_check(model, path, check, tolerance)


def _network_graph(network: torch.nn.Module, features: int) -> onnx.ModelProto:
    """The averaged networks (training.search.feedback.AveragedHeads of FeedbackNetworks)."""
    heads = list(network.heads)
    first = [h.interaction[0] for h in heads]
    hidden_layer = [h.out[0] for h in heads]
    last = [h.out[2] for h in heads]
    dim, hidden = first[0].in_features // 4, first[0].out_features

    def weight(layer) -> np.ndarray:
        return layer.weight.detach().cpu().numpy().astype(np.float32)

    def bias(layers) -> np.ndarray:
        return np.concatenate([layer.bias.detach().cpu().numpy() for layer in layers]
                              ).astype(np.float32)

    w1 = np.concatenate([weight(layer) for layer in first])  # [heads·h, 4d]
    w2 = [weight(layer) for layer in hidden_layer]  # each [h, h + F]: own hidden units, features
    arrays = {
        "net/w_query": w1[:, :dim], "net/w_pair": w1[:, dim:], "net/b1": bias(first),
        "net/w2_hidden": _block_diagonal([w[:, :hidden] for w in w2]),
        "net/w2_features": np.concatenate([w[:, hidden:] for w in w2]),
        "net/b2": bias(hidden_layer),
        "net/w3": _block_diagonal([weight(layer) for layer in last]), "net/b3": bias(last),
        "net/two": np.array(2.0, np.float32), "net/one": np.array(1.0, np.float32)}
    node = helper.make_node
    nodes = [
        # Once per query: Wq·q + b1.
        node("Gemm", ["query", "net/w_query", "net/b1"], ["net/query_share"], transB=1),
        node("Gather", ["query", "owner"], ["net/pair_query"], axis=0),
        node("Gather", ["net/query_share", "owner"], ["net/pair_query_share"], axis=0),
        # Per pair: [p, q ⊙ p, |q − p|] through the rest of the first layer.
        node("Mul", ["net/pair_query", "product"], ["net/product_of"]),
        node("Sub", ["net/pair_query", "product"], ["net/difference"]),
        node("Abs", ["net/difference"], ["net/distance"]),
        node("Concat", ["product", "net/product_of", "net/distance"], ["net/pair"], axis=1),
        node("Gemm", ["net/pair", "net/w_pair"], ["net/pair_share"], transB=1),
        node("Add", ["net/pair_query_share", "net/pair_share"], ["net/first"]),
        node("Relu", ["net/first"], ["net/hidden1"]),
        # Every head's second layer: its own hidden units and the features.
        node("Gemm", ["net/hidden1", "net/w2_hidden", "net/b2"], ["net/second_hidden"],
             transB=1),
        node("Gemm", ["features", "net/w2_features"], ["net/second_features"], transB=1),
        node("Add", ["net/second_hidden", "net/second_features"], ["net/second"]),
        node("Relu", ["net/second"], ["net/hidden2"]),
        node("Gemm", ["net/hidden2", "net/w3", "net/b3"], ["net/logits"], transB=1),
        # grade = mean over heads of 1 + 2·sigmoid(logit)
        node("Sigmoid", ["net/logits"], ["net/sigmoid"]),
        node("Mul", ["net/sigmoid", "net/two"], ["net/scaled"]),
        node("Add", ["net/scaled", "net/one"], ["net/grades"]),
        node("ReduceMean", ["net/grades"], ["network"], axes=[1], keepdims=0),
    ]
    float_input = onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("query", float_input, ["q", dim]),
              helper.make_tensor_value_info("owner", onnx.TensorProto.INT64, ["n"]),
              helper.make_tensor_value_info("product", float_input, ["n", dim]),
              helper.make_tensor_value_info("features", float_input, ["n", features])]
    graph = helper.make_graph(nodes, "feedback_networks", inputs,
                              [helper.make_tensor_value_info("network", float_input, ["n"])],
                              [numpy_helper.from_array(a, name) for name, a in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    """[Σ rows, Σ columns] with each block on the diagonal: head i's layer reads only head
    i's units."""
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)),
                   dtype=np.float32)
    row = column = 0
    for block in blocks:
        out[row:row + block.shape[0], column:column + block.shape[1]] = block
        row, column = row + block.shape[0], column + block.shape[1]
    return out


def _trees_graph(trees, features: int) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    converted = to_onnx(trees, initial_types=[("features", FloatTensorType([None, features]))],
                        target_opset={"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET})
    # Prefix every internal name so nothing collides with the network's; the input stays.
    prefixed = onnx.compose.add_prefix(converted, "trees/")
    for node in prefixed.graph.node:
        node.input[:] = ["features" if name == "trees/features" else name
                         for name in node.input]
    return prefixed


def _blend(network: onnx.ModelProto, trees: onnx.ModelProto,
           tree_share: float) -> onnx.ModelProto:
    """One graph: both parts side by side, the trees' [n, 1] squeezed to [n], and the blend."""
    (trees_out,) = [o.name for o in trees.graph.output]
    constants = [numpy_helper.from_array(np.array([1], dtype=np.int64), "blend/axis"),
                 numpy_helper.from_array(np.array(1.0 - tree_share, dtype=np.float32),
                                         "blend/network_share"),
                 numpy_helper.from_array(np.array(tree_share, dtype=np.float32),
                                         "blend/tree_share")]
    nodes = [*network.graph.node, *trees.graph.node,
             helper.make_node("Squeeze", [trees_out, "blend/axis"], ["trees"]),
             helper.make_node("Mul", ["network", "blend/network_share"], ["blend/network"]),
             helper.make_node("Mul", ["trees", "blend/tree_share"], ["blend/trees"]),
             helper.make_node("Add", ["blend/network", "blend/trees"], [HEAD_OUTPUT])]
    n = "n"
    outputs = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [n])
               for name in OUTPUTS]
    graph = helper.make_graph(nodes, "feedback_head", list(network.graph.input), outputs,
                              [*network.graph.initializer, *trees.graph.initializer,
                               *constants])
    opsets = {}
    for imported in (*network.opset_import, *trees.opset_import):
        opsets[imported.domain] = max(opsets.get(imported.domain, 0), imported.version)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                   for d, v in opsets.items()],
                             ir_version=max(network.ir_version, trees.ir_version),
                             producer_name="fusionrank")


def parity_check(model: BlendedHead, path: Path,
                 check: tuple[np.ndarray, np.ndarray, np.ndarray], tolerance: float) -> float:
    query, product, features = (np.ascontiguousarray(a, dtype=np.float32) for a in check)
    expected = model.predict_parts(query, product, features)
    queries, owner = np.unique(query, axis=0, return_inverse=True)
    feeds = {"query": queries, "owner": owner.reshape(-1).astype(np.int64), "product": product,
             "features": features}
    actual = onnx_session(path, threads=1).run(list(OUTPUTS), feeds)
    return max(check_parity(f"feedback head output {name!r}", expected[name], out,
                            max_abs_diff=tolerance)
               for name, out in zip(OUTPUTS, actual, strict=True))
