"""INT8 encoders for CPU serving: 8-bit weights with int8 arithmetic, and what it costs.

ONNX Runtime's `MatMulNBits` (8 bits, blocks of 32 along each weight column, symmetric)
replaces every MatMul with a constant weight; `accuracy_level=4` computes in int8, quantising
the activations at run time block by block within each row. A row is one token, so a query's
embedding never depends on the queries batched with it (ONNX Runtime's `quantize_dynamic`
quantises a whole batch with one scale, which breaks that: a query's ranking would change with
its neighbours). On this project's CPUs it encodes a query 2.6× faster than FP32, within a
cosine of ~0.9995; the ranking quality it costs is measured by `fusionrank evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from fusionrank.core import artefacts
from fusionrank.core.encoding import MAX_TITLE_TOKENS, OnnxEncoder, TextTokenizer

BITS, BLOCK, ACCURACY_LEVEL = 8, 32, 4  # accuracy level 4: int8 arithmetic
METHOD = f"MatMulNBits bits={BITS} block={BLOCK} accuracy_level={ACCURACY_LEVEL}"
METHOD_KEY = "fusionrank_quantisation"  # in the graph's metadata: how it was quantised


@dataclass(frozen=True)
class QuantisedEncoder:
    onnx_path: Path
    min_cosine_to_fp32: float
    mean_cosine_to_fp32: float
    method: str = METHOD


def quantised_with_this_method(path: Path) -> bool:
    """Whether `path` is an encoder this module quantised as it does now (an older file,
    dynamically quantised, is not)."""
    if not path.is_file():
        return False
    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False
                                                  ).metadata_props}
    return metadata.get(METHOD_KEY) == METHOD


def matmul_nbits_quantizer() -> type:
    """ONNX Runtime's MatMulNBitsQuantizer, imported without its side effect: at import its
    module calls `logging.basicConfig(level=INFO)`, which sends every library's INFO records to
    stderr (747 lines of its own "skip to quantize" in one build). The root logger gets back
    what it had, and the quantiser's logger says warnings and errors only."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    return MatMulNBitsQuantizer


def quantise_encoder(fp32_path: Path, tokenizer_path: Path, out_path: Path,
                     check_texts: Sequence[str]) -> QuantisedEncoder:
    quantiser = matmul_nbits_quantizer()(onnx.load(str(fp32_path)), bits=BITS, block_size=BLOCK,
                                     is_symmetric=True, accuracy_level=ACCURACY_LEVEL)
    quantiser.process()
    model = quantiser.model.model
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        METHOD_KEY: METHOD})
    with artefacts.replacing(out_path) as temporary:
        onnx.save(model, str(temporary))
    batch = TextTokenizer(tokenizer_path, MAX_TITLE_TOKENS)(check_texts)
    cosines = np.sum(OnnxEncoder(fp32_path)(batch) * OnnxEncoder(out_path)(batch), axis=1)
    return QuantisedEncoder(out_path, float(cosines.min()), float(cosines.mean()))
