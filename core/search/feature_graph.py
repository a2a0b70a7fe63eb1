"""The feedback head's numeric features as one ONNX graph over a whole batch of queries.

    graph = FeatureGraph(memory)
    numeric = graph(query, product, row, prior, hidden_fold)   # float32 [queries, pool, 9]

Inputs, for B queries of P candidates each (training pads shorter queries with row -1):
    query        float32 [B, d]     the query embeddings
    product      float32 [B, P, d]  the candidates' embeddings (gathered from the memory-mapped
                                    catalogue: every process serving it shares the pages)
    row          int64   [B, P]     their catalogue rows
    prior        float32 [B, P, 2]  their priors' (mean grade, judgement count)
    hidden_fold  int64   [B]        a training query's own fold, -1 for any other query
Output `numeric` [B, P, len(GRAPH_FEATURES)]: the similarity, the two prior features and the
judgement memory's six (`JudgementMemory`), which the graph holds as initialisers.

The memory, for query q and candidate p: the NEIGHBOUR_QUERIES training queries nearest to q
(outside a hidden fold), their judgements in that order, at most JUDGEMENT_WINDOW of them
(the 30 nearest Home Depot queries hold at most 251), each weighted by
softmax(SHARPNESS · (cos(q, q') + cos(p, p'))).

Every query gets the same shapes (P candidates against JUDGEMENT_WINDOW judgements), so what a
query's features are does not depend on the batch it arrives in: the server and the offline
evaluator batch differently and the head's trees split on these values (tested bit for bit).
The graph runs on one thread for the same reason. Built from the arrays at load, so it always
matches the memory beside it.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fusionrank.core.encoding import ONNX_OPSET, onnx_session

NEIGHBOUR_QUERIES = 30  # training queries consulted per query
JUDGEMENT_WINDOW = 256  # judgements of those queries compared with every candidate
SHARPNESS = 20.0  # softmax inverse temperature over cos(query) + cos(product)
GRAPH_INPUTS = ("query", "product", "row", "prior", "hidden_fold")
MEMORY_FEATURES = ("neighbour_grade", "neighbour_match", "nearest_grade", "judged_before",
                   "judged_grade", "nearest_query")  # JudgementMemory describes them
GRAPH_FEATURES = ("similarity", "prior", "prior_count", *MEMORY_FEATURES)


class _Builder:
    """Nodes with generated names: `op("MatMul", a, b)` returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initialisers: list[onnx.TensorProto] = []
        self._names = itertools.count()

    def constant(self, name: str, value: np.ndarray | float | int) -> str:
        self.initialisers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, named: str | None = None,
           **attributes) -> str | list[str]:
        """`named`: the name of its (single) output, for a graph output."""
        names = [named] if named else [f"{op_type.lower()}_{next(self._names)}"
                                       for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names


def feature_model(query_vectors: np.ndarray, folds: np.ndarray, offsets: np.ndarray,
                  product_rows: np.ndarray, grades: np.ndarray) -> onnx.ModelProto:
    """The graph for a judgement memory's arrays (see `JudgementMemory`). The judged products'
    vectors, its largest array, are an input (`memory_vectors`): ONNX Runtime reads the
    memory's own array, not a copy.

    Long for a reason: the graph is one list of nodes that reads top to bottom as the
    computation does, each naming the tensors it wires; split into helpers, those names would
    be scattered over functions that only make sense together."""
    queries, dim = query_vectors.shape
    judgements = len(grades)
    counts = np.diff(offsets)
    span = max(int(counts.max()), 1)
    # spans[i, s]: query i's s-th judgement, or `judgements` (a blank: past the last one).
    spans = np.full((queries, span), judgements, dtype=np.int64)
    spans[np.repeat(np.arange(queries), counts),
          np.arange(judgements) - np.repeat(offsets[:-1], counts)] = np.arange(judgements)
    neighbours = min(NEIGHBOUR_QUERIES, queries)
    window = min(JUDGEMENT_WINDOW, neighbours * span)

    g = _Builder()
    c = g.constant
    queries_t = c("memory/queries_t", np.ascontiguousarray(query_vectors.T, dtype=np.float32))
    fold_of = c("memory/folds", folds.astype(np.int64))
    spans_c = c("memory/spans", spans)
    rows_c = c("memory/product_rows", product_rows.astype(np.int64))
    grades_c = c("memory/grades", grades.astype(np.float32))
    blank = c("blank", np.array(judgements, dtype=np.int64))
    last_judgement = c("last_judgement", np.array(judgements - 1, dtype=np.int64))
    k = c("neighbours", np.array([neighbours], dtype=np.int64))
    w = c("window", np.array([window], dtype=np.int64))
    flat = c("flat", np.array([0, neighbours * span], dtype=np.int64))
    positions = c("positions", np.arange(neighbours * span, dtype=np.float32))
    beyond = c("beyond", np.float32(neighbours * span))
    minus_inf = c("minus_inf", np.float32(-np.inf))
    zero, one, two, three = (c(n, np.float32(v)) for n, v in
                             (("zero", 0), ("one", 1), ("two", 2), ("three", 3)))
    sharpness = c("sharpness", np.float32(SHARPNESS))
    tiny = c("tiny", np.float32(1e-30))
    axis1, axis2, last = (c(n, np.array(v, dtype=np.int64)) for n, v in
                          (("axis1", [1]), ("axis2", [2]), ("last", [-1])))
    op = g.op

    # The nearest training queries, outside the hidden fold.
    similarity = op("MatMul", "query", queries_t)  # [B, M]
    hidden = op("Equal", op("Unsqueeze", "hidden_fold", axis1), fold_of)
    near_sim, nearest = op("TopK", op("Where", hidden, minus_inf, similarity), k, outputs=2,
                           axis=1, largest=1, sorted=1)  # [B, K]
    visible = op("Not", op("IsInf", near_sim, detect_positive=0))
    # Their judgements in order, the visible ones first, cut to the window.
    slots = op("Gather", spans_c, nearest)  # [B, K, S]
    valid = op("And", op("Not", op("Equal", slots, blank)), op("Unsqueeze", visible, axis2))
    # cos(q, q') of each valid slot; 0 elsewhere (not -inf · 0: NaN would reach the sums).
    slot_sim = op("Where", valid, op("Unsqueeze", near_sim, axis2), zero)
    valid_flat = op("Reshape", valid, flat)  # [B, K·S]
    key = op("Where", valid_flat, positions, op("Add", positions, beyond))
    _, order = op("TopK", key, w, outputs=2, axis=1, largest=0, sorted=1)  # [B, W]
    # Blanks (masked below) read the last judgement rather than past the end.
    judged = op("Min", op("GatherElements", op("Reshape", slots, flat), order, axis=1),
                last_judgement)
    judged_valid = op("GatherElements", valid_flat, order, axis=1)
    judged_sim = op("GatherElements", op("Reshape", slot_sim, flat), order, axis=1)
    judged_grades = op("Unsqueeze", op("Gather", grades_c, judged), axis1)  # [B, 1, W]
    mask = op("Unsqueeze", judged_valid, axis1)  # [B, 1, W]

    # Each candidate against each judgement: cos(p, p') + cos(q, q').
    judged_vectors = op("Cast", op("Gather", "memory_vectors", judged), to=TensorProto.FLOAT)
    joint = op("Add", op("MatMul", "product", op("Transpose", judged_vectors, perm=[0, 2, 1])),
               op("Unsqueeze", judged_sim, axis1))  # [B, P, W]
    joint = op("Where", mask, joint, minus_inf)
    best = op("ReduceMax", joint, axes=[2], keepdims=1)  # [B, P, 1]
    safe_best = op("Where", op("IsInf", best), zero, best)
    weight = op("Exp", op("Mul", sharpness, op("Sub", joint, safe_best)))
    neighbour_grade = op("Sub", op("Div", op("ReduceSum", op("Mul", weight, judged_grades),
                                              last, keepdims=1),
                                   op("Max", op("ReduceSum", weight, last, keepdims=1), tiny)),
                         two)
    nearest_grade = op("Sub", op("GatherElements", op("Expand", judged_grades, op(
        "Shape", joint)), op("ArgMax", joint, axis=2, keepdims=1), axis=2), two)
    # The candidate itself among the judgements, weighted by its query's similarity.
    same = op("And", op("Equal", op("Unsqueeze", "row", axis2),
                        op("Unsqueeze", op("Gather", rows_c, judged), axis1)), mask)
    same = op("Cast", same, to=TensorProto.FLOAT)
    same_weight = op("Mul", same, op("Unsqueeze", op(
        "Exp", op("Mul", sharpness, op("Sub", judged_sim, one))), axis1))
    judged_before = op("ReduceMax", same, axes=[2], keepdims=1)
    judged_grade = op("Where", op("Greater", judged_before, zero), op("Div", op("Div", op(
        "ReduceSum", op("Mul", same_weight, judged_grades), last, keepdims=1), op(
        "Max", op("ReduceSum", same_weight, last, keepdims=1), tiny)), three), zero)
    shape = op("Shape", best)
    nearest_query = op("Expand", op("Unsqueeze", op("Slice", near_sim, c("start", np.array(
        [0], np.int64)), c("end", np.array([1], np.int64)), axis1), axis2), shape)
    memory = op("Concat", neighbour_grade, op("Sub", best, two), nearest_grade, judged_before,
                judged_grade, nearest_query, axis=2)
    # A query that sees no training query at all gets zeros.
    sees_any = op("Unsqueeze", op("ReduceMax", op("Cast", visible, to=TensorProto.FLOAT),
                                  axes=[1], keepdims=1), axis2)  # [B, 1, 1]
    memory = op("Where", op("Greater", sees_any, zero), memory, zero)

    # The cosine (elementwise, not a matrix product: the same sum whatever the batch) and
    # the priors.
    cosine = op("ReduceSum", op("Mul", "product", op("Unsqueeze", "query", axis1)), last,
                keepdims=1)
    mean, count = op("Split", "prior", axis=2, outputs=2)
    prior = op("Sub", mean, two)
    prior_count = op("Div", op("Log", op("Add", count, one)), three)
    op("Concat", cosine, prior, prior_count, memory, axis=2, named="numeric")

    inputs = [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["B", dim]),
              helper.make_tensor_value_info("product", TensorProto.FLOAT, ["B", "P", dim]),
              helper.make_tensor_value_info("row", TensorProto.INT64, ["B", "P"]),
              helper.make_tensor_value_info("prior", TensorProto.FLOAT, ["B", "P", 2]),
              helper.make_tensor_value_info("hidden_fold", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("memory_vectors", TensorProto.FLOAT16,
                                            [judgements, dim])]
    output = helper.make_tensor_value_info("numeric", TensorProto.FLOAT,
                                           ["B", "P", len(GRAPH_FEATURES)])
    model = helper.make_model(helper.make_graph(g.nodes, "features", inputs, [output],
                                                g.initialisers),
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    helper.set_model_props(model, {"features": ",".join(GRAPH_FEATURES)})
    onnx.checker.check_model(model)
    return model


class FeatureGraph:
    """The numeric features graph of a judgement memory, run by ONNX Runtime on one thread."""

    def __init__(self, model: onnx.ModelProto, memory_vectors: np.ndarray):
        self.session = onnx_session(model.SerializeToString(), threads=1)
        self.memory_vectors = np.ascontiguousarray(memory_vectors, dtype=np.float16)

    def __call__(self, query: np.ndarray, product: np.ndarray, row: np.ndarray,
                 prior: np.ndarray, hidden_fold: np.ndarray) -> np.ndarray:
        feeds = dict(zip(GRAPH_INPUTS, (
            np.ascontiguousarray(query, dtype=np.float32),
            np.ascontiguousarray(product, dtype=np.float32),
            np.ascontiguousarray(row, dtype=np.int64),
            np.ascontiguousarray(prior, dtype=np.float32),
            np.ascontiguousarray(hidden_fold, dtype=np.int64)), strict=True))
        feeds["memory_vectors"] = self.memory_vectors
        return self.session.run(["numeric"], feeds)[0]
