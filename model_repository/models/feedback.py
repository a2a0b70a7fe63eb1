"""feedback: the feedback head's predicted relevance grade for every candidate.

In:  QUERY [1] BYTES, EMBEDDING [d] FP32, CANDIDATES [P] INT64, LEXICAL [P] FP32
     (the cosine feature is recomputed here from EMBEDDING, as the evaluator computes it)
Out: FEEDBACK [P] FP32   predicted grade, 1 (irrelevant) .. 3 (highly relevant)

Features come from fusionrank.training.features (numpy only), the code the offline evaluator
uses, with the run's product priors, its memory of training judgements (`memory.npz`) and term
vectors made at load from the catalogue embeddings; the head is the ONNX export of
fusionrank.training.feedback (networks and boosted trees, blended), one ONNX Runtime call for
all the candidates of all the requests of a batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusionrank.contract import RequestError
from fusionrank.encoding import onnx_session
from fusionrank.model_repository.models.base import Tensors, split_rows, triton_model
from fusionrank.model_repository.models.lexical import EMBEDDINGS_FILE, query_text
from fusionrank.training.features import (
    JudgementMemory,
    ProductPriors,
    TermVectors,
    TitleTerms,
    pair_features,
)

HEAD_FILE = "feedback_head.onnx"
PRIORS_FILE = "priors.npy"
MEMORY_FILE = "memory.npz"
PRODUCTS_FILE = "products.jsonl"
HEAD_INPUTS = ("query", "product", "features")
HEAD_OUTPUT = "grade"  # the blend; the graph also outputs its parts, for the evaluation


class PredictFeedback:
    def __init__(self, folder: Path, parameters: Mapping[str, str]):
        threads = int(parameters.get("threads", "0"))
        self.session = onnx_session(folder / HEAD_FILE, threads=threads or None)
        self.embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
        self.priors = ProductPriors.load(folder / PRIORS_FILE)
        self.memory = JudgementMemory.load(folder / MEMORY_FILE)
        lines = (folder / PRODUCTS_FILE).read_text(encoding="utf-8").splitlines()
        self.terms = TitleTerms([json.loads(line)["title"] for line in lines])
        sizes = {len(self.embeddings), len(self.priors.mean), len(self.terms.terms)}
        if len(sizes) != 1:
            raise ValueError(f"feedback artefacts disagree on the catalogue size: {sorted(sizes)}")
        if self.memory.query_vectors.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"{MEMORY_FILE} holds {self.memory.query_vectors.shape[1]}-d vectors, "
                             f"the catalogue {self.embeddings.shape[1]}-d: not the same encoder")
        self.term_vectors = TermVectors.fit(self.terms, self.embeddings)

    def __call__(self, requests: list[Tensors]) -> list[Tensors | RequestError]:
        queries, products, features, shapes = [], [], [], []
        for request in requests:
            shapes.append(request["CANDIDATES"].shape)
            for text, vector, rows, lexical in zip(
                    request["QUERY"].reshape(-1), request["EMBEDDING"], request["CANDIDATES"],
                    request["LEXICAL"], strict=True):
                rows = np.asarray(rows, dtype=np.int64)
                vector = np.asarray(vector, dtype=np.float32)
                product = np.asarray(self.embeddings[rows], dtype=np.float32)
                features.append(pair_features(query_text(text), vector, product, rows, lexical,
                                              self.terms, self.term_vectors, self.priors,
                                              self.memory))
                queries.append(np.repeat(vector[None], len(rows), axis=0))
                products.append(product)
        inputs = [np.concatenate(a) for a in (queries, products, features)]
        (grades,) = self.session.run([HEAD_OUTPUT], dict(zip(HEAD_INPUTS, inputs, strict=True)))
        parts = split_rows(grades.astype(np.float32), [int(np.prod(s)) for s in shapes])
        return [{"FEEDBACK": part.reshape(shape)} for part, shape in zip(parts, shapes,
                                                                           strict=True)]


TritonPythonModel = triton_model(PredictFeedback)
