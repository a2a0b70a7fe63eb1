"""Export a trained cross-encoder reranker to ONNX (FP32, and INT8 for CPU serving), each
checked against PyTorch on real pairs.

The FP32 graph must reproduce PyTorch's logits within `MAX_ABS_DIFF` on every check pair, as
every export does. INT8 (MatMulNBits, the encoders' method: a pair's logit never depends on the
pairs batched with it) moves logits by more than that by design; its check is that it keeps
each query's order: the Spearman correlation of INT8 and FP32 logits over the check pairs must
be at least `MIN_INT8_SPEARMAN`, and the figures go into the spec for the report.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from fusionrank.core import artefacts
from fusionrank.core.artefacts import replacing
from fusionrank.core.encoding import ONNX_OPSET, onnx_session
from fusionrank.core.search.reranker import PAIR_INPUTS, OnnxReranker, PairTokenizer
from fusionrank.export.graphs import check_parity
from fusionrank.export.quantize import (
    ACCURACY_LEVEL,
    BITS,
    BLOCK,
    METHOD,
    METHOD_KEY,
    matmul_nbits_quantizer,
)

MAX_ABS_DIFF = 1e-3  # FP32 ONNX logits against PyTorch's
MIN_INT8_SPEARMAN = 0.98  # INT8 logits' rank correlation with FP32's over the check pairs


@dataclass(frozen=True)
class ExportedReranker:
    fp32: Path
    int8: Path | None
    tokenizer: Path
    fp32_max_abs_diff: float
    int8_max_abs_diff: float | None
    int8_spearman: float | None


def export_reranker(model: torch.nn.Module, tokenizer: PairTokenizer, tokenizer_file: Path,
                    out_dir: Path, check_pairs: tuple[Sequence[str], Sequence[str]],
                    int8: bool = True) -> ExportedReranker:
    """RERANKER (and RERANKER_INT8) and a copy of the tokenizer in `out_dir`; fails unless
    the checks above hold on `check_pairs` (queries, titles)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = out_dir / artefacts.RERANKER
    example = tokenizer(["cordless drill", "lamp"], ["DEWALT 20-Volt drill", "table lamp"])
    with torch.no_grad(), warnings.catch_warnings(), replacing(fp32_path) as temporary:
        # transformers' attention branches on shapes; a mask is always given, and the parity
        # check proves the graph does not depend on the example's shape.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(), tuple(torch.from_numpy(getattr(example, n)) for n in PAIR_INPUTS),
            str(temporary), dynamo=False, opset_version=ONNX_OPSET,
            input_names=list(PAIR_INPUTS), output_names=["logit"],
            dynamic_axes={**{n: {0: "pairs", 1: "tokens"} for n in PAIR_INPUTS},
                          "logit": {0: "pairs"}})
    tokenizer_path = out_dir / artefacts.TOKENIZER
    with replacing(tokenizer_path) as temporary:
        shutil.copyfile(tokenizer_file, temporary)
    queries, titles = list(check_pairs[0]), list(check_pairs[1])
    batch = tokenizer(queries, titles)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(getattr(batch, n)) for n in PAIR_INPUTS)).numpy()
    labels = [f"{q} | {t}" for q, t in zip(queries, titles, strict=True)]
    fp32_logits = OnnxReranker(fp32_path)(batch)
    worst = check_parity("reranker", expected, fp32_logits, max_abs_diff=MAX_ABS_DIFF,
                         labels=labels)
    if not int8:
        return ExportedReranker(fp32_path, None, tokenizer_path, worst, None, None)
    int8_path = quantise_reranker(fp32_path, out_dir / artefacts.RERANKER_INT8)
    int8_logits = OnnxReranker(int8_path)(batch)
    from scipy.stats import spearmanr

    spearman = float(spearmanr(fp32_logits, int8_logits).statistic)
    if not spearman >= MIN_INT8_SPEARMAN:
        raise RuntimeError(f"INT8 reranker: its logits' rank correlation with FP32's is "
                           f"{spearman:.4f} < {MIN_INT8_SPEARMAN}")
    return ExportedReranker(fp32_path, int8_path, tokenizer_path, worst,
                            float(np.abs(fp32_logits - int8_logits).max()), spearman)


class GroupedPairs(torch.nn.Module):
    """The reranker over [queries, N, tokens] → [queries, N]: the form a native Triton model
    batches (a query's N pairs are one batch item), for the GPU repository."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        queries, depth, tokens = input_ids.shape
        flat = [t.reshape(queries * depth, tokens)
                for t in (input_ids, attention_mask, token_type_ids)]
        return self.model(*flat).reshape(queries, depth)


def export_grouped_reranker(model: torch.nn.Module, tokenizer: PairTokenizer, out_path: Path,
                            check_pairs: tuple[Sequence[str], Sequence[str]], depth: int) -> float:
    """RERANKER_GROUPED: the FP32 graph over [queries, depth, max_tokens] (pairs padded to the
    tokenizer's max_tokens); parity-checked against PyTorch on `check_pairs` grouped by
    `depth`. Returns the largest |difference|."""
    grouped = GroupedPairs(model).eval()
    queries, titles = list(check_pairs[0]), list(check_pairs[1])
    usable = len(queries) // depth * depth
    if not usable:
        raise ValueError(f"the parity check needs at least {depth} pairs")
    batch = tokenizer(queries[:usable], titles[:usable])
    room = tokenizer.max_tokens - batch.input_ids.shape[1]
    padded = [np.pad(getattr(batch, n), ((0, 0), (0, room))).reshape(
        -1, depth, tokenizer.max_tokens) for n in PAIR_INPUTS]
    example = tuple(torch.from_numpy(a) for a in padded)
    with torch.no_grad(), warnings.catch_warnings(), replacing(out_path) as temporary:
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(grouped, example, str(temporary), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=list(PAIR_INPUTS),
                          output_names=["logit"],
                          dynamic_axes={**{n: {0: "queries"} for n in PAIR_INPUTS},
                                        "logit": {0: "queries"}})
    with torch.no_grad():
        expected = grouped(*example).numpy()
    session = onnx_session(out_path)
    (actual,) = session.run(None, dict(zip(PAIR_INPUTS, padded, strict=True)))
    return check_parity("reranker (grouped)", expected, actual, max_abs_diff=MAX_ABS_DIFF)


def quantise_reranker(fp32_path: Path, out_path: Path) -> Path:
    quantiser = matmul_nbits_quantizer()(onnx.load(str(fp32_path)), bits=BITS,
                                         block_size=BLOCK, is_symmetric=True,
                                         accuracy_level=ACCURACY_LEVEL)
    quantiser.process()
    graph = quantiser.model.model
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props},
                                        METHOD_KEY: METHOD})
    with replacing(out_path) as temporary:
        onnx.save(graph, str(temporary))
    return out_path
