"""What every served model's gRPC contract shares: tensor specs, request checks and limits.

Each feature's own contract (`fusionrank.core.<feature>.contract`) builds on it. One source of
truth for the model repository (which declares it to Triton), the server-side checks and the
client SDK; docs/grpc_contract.md describes it for other languages' clients.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_K = 100
MAX_BATCH = 64
DEFAULT_K = 10


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output; `dims` exclude the batch dimension (-1 = variable)."""

    name: str
    dtype: str  # Triton dtype name as used on the wire: BYTES, INT32, INT64, FP32
    dims: tuple[int, ...]
    # Lets the dynamic batcher combine requests whose shapes differ (the model pads them).
    ragged: bool = False
    # An input a request may leave out (Triton's `optional: true`).
    # On a step's declared output: one an answer may leave out (Triton's output config has no
    # such flag, so none is written there).
    optional: bool = False


class RequestError(ValueError):
    """Bad input in one request. The server answers it with gRPC INVALID_ARGUMENT."""


def check_text(value: bytes | str, tensor: str, row: int, max_chars: int) -> str:
    """One row of a text input, trimmed, or a RequestError naming the tensor, the row and
    what is wrong with it (not UTF-8, a NUL character, empty, too long)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(f"{tensor}[{row}] is not valid UTF-8 "
                               f"(byte 0x{value[error.start]:02x} at offset {error.start})"
                               ) from None
    if "\0" in value:  # never text: C code downstream would cut the string there
        raise RequestError(f"{tensor}[{row}] contains a NUL character "
                           f"(at offset {value.index(chr(0))})")
    text = value.strip()
    if not text:
        raise RequestError(f"{tensor}[{row}] is empty or only whitespace")
    if len(text) > max_chars:
        raise RequestError(f"{tensor}[{row}] is {len(text)} characters long; "
                           f"the limit is {max_chars}")
    return text


def check_k(values: list[int]) -> int:
    """The one K of a request (every row must ask for the same), within 1..MAX_K."""
    if not values:
        raise RequestError("K is missing")
    distinct = sorted(set(values))
    if len(distinct) > 1:
        raise RequestError(f"K must be the same for every row of a request, got {distinct}")
    k = distinct[0]
    if not 1 <= k <= MAX_K:
        raise RequestError(f"K = {k} is out of range: it must be between 1 and {MAX_K}")
    return k


def check_batch(size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise RequestError(f"a request carries {size} queries; it must carry 1 to {MAX_BATCH}")
