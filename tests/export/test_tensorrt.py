"""The TensorRT path: what runs without a GPU (profiles, calibration batches, clear refusals)
and, where TensorRT and a GPU exist, an engine build."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrank.core.encoding import TextTokenizer
from fusionrank.export.tensorrt import (
    ShapeProfile,
    build_engine,
    calibration_batches,
    tensorrt_available,
)
from fusionrank.model_repository.config import served_version


@pytest.fixture(scope="module")
def tokenizer(model_dir) -> TextTokenizer:
    return TextTokenizer(model_dir / "tokenizer.json", max_tokens=32)


def test_profile_must_be_ordered():
    assert ShapeProfile().max == (64, 32)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(min=(1, 1), opt=(8, 64), max=(64, 32))


def test_calibration_batches_are_real_text_in_one_shape(tokenizer):
    texts = [f"cordless drill model {i} with battery" for i in range(40)]
    batches = calibration_batches(texts, tokenizer, ShapeProfile(opt=(8, 8), max=(64, 12)))
    assert len(batches) == 5
    for batch in batches:
        assert batch.input_ids.shape == batch.attention_mask.shape == (8, 12)
        assert (batch.input_ids[:, 0] == 101).all()  # [CLS]: tokenised text, not zeros
        np.testing.assert_array_equal(batch.attention_mask, batch.input_ids != 0)
    with pytest.raises(ValueError, match="at least 8 texts"):
        calibration_batches(texts[:3], tokenizer, ShapeProfile())


def test_build_refuses_clearly(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engine(tmp_path / "e.onnx", tmp_path / "e.plan", "int4")
    with pytest.raises(ValueError, match="needs calibration batches"):
        build_engine(tmp_path / "e.onnx", tmp_path / "e.plan", "int8")
    if not tensorrt_available():
        with pytest.raises(RuntimeError, match="CUDA GPU and the tensorrt package"):
            build_engine(tmp_path / "e.onnx", tmp_path / "e.plan", "fp16")


@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT and a CUDA GPU")
def test_fp16_engine_builds_from_the_exported_encoder(search_repository, tmp_path):
    onnx_path = served_version(search_repository, "query_encoder") / "encoder.onnx"
    plan = build_engine(onnx_path, tmp_path / "encoder.plan", "fp16")
    assert plan.stat().st_size > 1_000_000
