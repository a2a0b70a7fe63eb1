"""Export the feedback head to ONNX, as one graph, and check it against the trained model.

Graph: query [n, d] float32, product [n, d] float32, features [n, F] float32 →
    grade [n]    the blend the server uses: (1 − w)·network + w·trees
    network [n]  the averaged networks alone (torch.onnx)
    trees [n]    the boosted trees alone (skl2onnx: an ai.onnx.ml TreeEnsemble node)
The parts are outputs too, so `fusionrank evaluate` measures each one from the served file.
The server's `scoring` step runs it with ONNX Runtime over every (query, candidate) pair.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from fusionrank.core.encoding import onnx_session
from fusionrank.core.search.runtime import HEAD_INPUTS, HEAD_OUTPUT
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
    rows and all three outputs; fail above `tolerance`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    features = check[2].shape[1]
    graph = _blend(_network_graph(model.network, check), _trees_graph(model.trees, features),
                   model.tree_share)
    onnx.checker.check_model(graph)
    onnx.save(graph, path)
    return parity_check(model, path, check, tolerance)


def _network_graph(network: torch.nn.Module,
                   check: tuple[np.ndarray, np.ndarray, np.ndarray]) -> onnx.ModelProto:
    example = tuple(torch.from_numpy(np.ascontiguousarray(a[:2], dtype=np.float32))
                    for a in check)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        file = Path(tmp) / "network.onnx"
        torch.onnx.export(network.eval(), example, str(file), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(HEAD_INPUTS),
                          output_names=["network"],
                          dynamic_axes={**{n: {0: "n"} for n in HEAD_INPUTS}, "network": {0: "n"}})
        return onnx.load(file)


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
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in check]
    expected = model.predict_parts(*arrays)
    actual = onnx_session(path, threads=1).run(list(OUTPUTS),
                                                dict(zip(HEAD_INPUTS, arrays, strict=True)))
    return max(check_parity(f"feedback head output {name!r}", expected[name], out,
                            max_abs_diff=tolerance)
               for name, out in zip(OUTPUTS, actual, strict=True))
