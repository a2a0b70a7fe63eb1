"""`.npz` files whose arrays are read memory-mapped rather than copied into each process.

A serving process that loads an artefact with `np.load` holds a private copy of every array; two
copies of the `search_steps` process hold two. `save_mappable` writes an ordinary uncompressed
`.npz` (np.load still reads it) whose every array's bytes start on a 64-byte boundary, and
`load_mapped` returns read-only arrays over one mapping of the file: the processes then share the
page cache's pages, and only the pages a request touches become resident.

An `.npz` written by `np.savez` loads too (its arrays unaligned, which numpy handles); a
compressed member is decompressed into memory, as np.load would.
"""

from __future__ import annotations

import io
import mmap
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from fusionrank.core.artefacts import ArtefactError

ALIGN = 64  # bytes: an array's data starts at a multiple of this in the file
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
LOCAL_SIGNATURE = b"PK\x03\x04"
PADDING_FIELD = 0xD935  # a zip extra field id that readers skip (Android's zipalign uses it)


def save_mappable(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` to `path` as an uncompressed `.npz` with each array's data 64-byte
    aligned (no pickled objects: an object array is refused)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d 1-d)
            if array.dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects; cannot save it to {path}")
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(
                header, np.lib.format.header_data_from_array_1_0(array))
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.file_size = header.tell() + array.nbytes  # known: no zip64 header unless big
            # Pad the local header's extra field so that the data after the .npy header (itself
            # a multiple of 64 bytes long) starts aligned.
            # zipfile appends a 20-byte zip64 field after it to a member this large.
            zip64 = 20 if member.file_size * 1.05 > zipfile.ZIP64_LIMIT else 0
            before_extra = archive.fp.tell() + LOCAL_HEADER.size + len(member.filename.encode())
            pad = -(before_extra + 4 + zip64 + header.tell()) % ALIGN
            member.extra = struct.pack("<HH", PADDING_FIELD, pad) + bytes(pad)
            with archive.open(member, "w") as handle:
                handle.write(header.getvalue())
                handle.write(memoryview(array.reshape(-1)).cast("B"))


def load_mapped(path: str | Path, names: Iterable[str],
                optional: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """The named arrays of an `.npz` file (and those of `optional` it holds), read-only and
    memory-mapped (stored members); an ArtefactError naming the file where it is unreadable or
    lacks one of `names`."""
    path = Path(path)
    names = list(names)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            missing = [name for name in names if f"{name}.npy" not in members]
            if missing:
                raise ArtefactError(f"{path} lacks the array(s) {', '.join(missing)}; rebuild it")
            names += [name for name in optional if f"{name}.npy" in members]
            compressed = {name: np.load(io.BytesIO(archive.read(f"{name}.npy")),
                                        allow_pickle=False)
                          for name in names
                          if members[f"{name}.npy"].compress_type != zipfile.ZIP_STORED}
        with path.open("rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            return {name: compressed[name] if name in compressed else
                    _mapped_member(mapping, handle, members[f"{name}.npy"], path)
                    for name in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as error:
        if isinstance(error, ArtefactError):
            raise
        raise ArtefactError(f"{path} is not a readable .npz archive ({error}); rebuild it"
                            ) from error


def _mapped_member(mapping: mmap.mmap, handle: io.BufferedReader, member: zipfile.ZipInfo,
                   path: Path) -> np.ndarray:
    """The array a stored member holds, as a read-only view of `mapping`."""
    signature, name_length, extra_length = LOCAL_HEADER.unpack_from(mapping, member.header_offset)
    if signature != LOCAL_SIGNATURE:
        raise ArtefactError(f"{path}: member {member.filename} has no local header; rebuild it")
    start = member.header_offset + LOCAL_HEADER.size + name_length + extra_length
    handle.seek(start)
    version = np.lib.format.read_magic(handle)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(handle)
    if dtype.hasobject:
        raise ArtefactError(f"{path}: {member.filename} holds Python objects; rebuild it")
    count = int(np.prod(shape, dtype=np.int64))
    offset = handle.tell()
    if offset + count * dtype.itemsize > start + member.file_size:
        raise ArtefactError(f"{path}: {member.filename} is shorter than its header says; "
                            "rebuild it")
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    array = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")
