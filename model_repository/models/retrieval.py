"""retrieval: query embeddings → the catalogue's most similar products (cosine, top-K).

The index is an ONNX graph (MatMul against the catalogue embeddings, then TopK), run by ONNX
Runtime: its MLAS kernels handle a dynamic batch of queries far faster than numpy's BLAS here,
and the same graph runs unchanged on Triton's onnxruntime or TensorRT backends on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import MAX_K, RequestError, check_k
from fusionrank.encoding import onnx_session
from fusionrank.model_repository.models.base import Tensors, only_valid, split_rows, triton_model

INDEX_FILE = "retrieval.onnx"


class Retrieve:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.session = onnx_session(folder / INDEX_FILE, threads=threads or None)
        self.catalogue_size = int(self.session.get_modelmeta().custom_metadata_map["products"])
        self.pool = min(int(parameters.get("candidates", str(MAX_K))), self.catalogue_size)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        valid, results = only_valid(requests, lambda r: check_k(r["K"].reshape(-1).tolist()))
        if not valid:
            return results
        queries = np.concatenate([requests[i]["EMBEDDING"] for i in valid]).astype(np.float32)
        similarity, rows = self.session.run(
            None, {"query": queries, "k": np.array([self.pool], dtype=np.int64)})
        sizes = [len(requests[i]["EMBEDDING"]) for i in valid]
        for i, sim, row in zip(valid, split_rows(similarity, sizes), split_rows(rows, sizes),
                               strict=True):
            results[i] = {"CANDIDATES": row, "SIMILARITY": sim}
        return results


TritonPythonModel = triton_model(Retrieve)
