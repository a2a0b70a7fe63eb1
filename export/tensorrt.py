"""TensorRT engines for GPU serving: the ONNX encoder built as an FP16 or INT8 plan.

GPU deployments run NVIDIA's Triton container, whose `tensorrt` backend serves the plan
directly (docker/Dockerfile). An engine is built for one GPU architecture and TensorRT
version, so it is built where it will run:

    fusionrank export-tensorrt --onnx build/artefacts/encoder/encoder.onnx --precision int8

The plan takes `input_ids` and `attention_mask` padded to any length up to the profile's
maximum; INT8 needs calibration batches of real text (entropy calibration, TensorRT's
`IInt8EntropyCalibrator2`). Everything but the build itself (profiles, calibration batches) is
plain numpy and tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionrank.core.contract import MAX_BATCH
from fusionrank.core.encoding import MAX_QUERY_TOKENS, TextTokenizer, TokenBatch

PRECISIONS = ("fp16", "int8")
ENCODER_INPUTS = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class ShapeProfile:
    """Smallest, typical and largest (batch, tokens) the engine accepts."""

    min: tuple[int, int] = (1, 1)
    opt: tuple[int, int] = (8, 16)
    max: tuple[int, int] = (MAX_BATCH, MAX_QUERY_TOKENS)

    def __post_init__(self) -> None:
        for axis in range(2):
            if not 1 <= self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ValueError(f"profile needs 1 <= min <= opt <= max on every axis: {self}")


def calibration_batches(texts: Sequence[str], tokenizer: TextTokenizer, profile: ShapeProfile,
                        max_batches: int = 64) -> list[TokenBatch]:
    """Real text in batches of the profile's typical batch size, padded to its maximum length
    (a calibrator serves one shape)."""
    batch_size, tokens = profile.opt[0], profile.max[1]
    if len(texts) < batch_size:
        raise ValueError(f"calibration needs at least {batch_size} texts, got {len(texts)}")
    batches = []
    for start in range(0, min(len(texts), batch_size * max_batches) - batch_size + 1, batch_size):
        ids = np.zeros((batch_size, tokens), dtype=np.int64)
        for row, sequence in enumerate(tokenizer.token_ids(texts[start:start + batch_size])):
            ids[row, :min(len(sequence), tokens)] = sequence[:tokens]
        batches.append(TokenBatch(ids, (ids != 0).astype(np.int64)))
    return batches


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def build_engine(onnx_path: Path, engine_path: Path, precision: str,
                 profile: ShapeProfile = ShapeProfile(),
                 calibration: Sequence[TokenBatch] = (), workspace_gib: int = 4) -> Path:
    """Parse the ONNX encoder and serialise a TensorRT plan for this GPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "int8" and not calibration:
        raise ValueError("an INT8 engine needs calibration batches of real text")
    if not tensorrt_available():
        raise RuntimeError("TensorRT engines are built on a machine with a CUDA GPU and the "
                           "tensorrt package (pip install 'fusionrank[gpu]')")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    shapes = builder.create_optimization_profile()
    for name in ENCODER_INPUTS:
        shapes.set_shape(name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(shapes)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(shapes)
        config.int8_calibrator = _entropy_calibrator(trt, calibration,
                                                     engine_path.with_suffix(".calib"))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine; its log above says why")
    engine_path.write_bytes(bytes(plan))
    return engine_path


def _entropy_calibrator(trt, batches: Sequence[TokenBatch], cache: Path):
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the calibration batches to TensorRT through device buffers."""

        def __init__(self) -> None:
            super().__init__()
            self._batches: Iterator[TokenBatch] = iter(batches)
            self._device: list[torch.Tensor] = []

        def get_batch_size(self) -> int:
            return len(batches[0].input_ids)

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            self._device = [torch.from_numpy(arrays[name]).cuda() for name in names]
            return [tensor.data_ptr() for tensor in self._device]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()
