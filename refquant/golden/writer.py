"""Writing a golden directory: the files' bytes with their manifest entries, a directory made
safe to (re)write, and the manifest written last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import GoldenFileError, file_entry, npy_bytes, write_bytes
from .manifest import MANIFEST, dumps, layout_of, load_golden

__all__ = ["GoldenWriter", "prepare_directory", "write_golden_files"]


class GoldenWriter:
    """Collects file bytes and their manifest entries."""

    def __init__(self):
        self.blobs: dict = {}
        self.files: dict = {}

    def tensor(self, name: str, array: np.ndarray, role: str, op: str = "") -> str:
        data = npy_bytes(array)
        self.blobs[name] = data
        self.files[name] = file_entry(data, dtype=array.dtype.name, shape=list(array.shape),
                                      layout=layout_of(role, op, array.ndim))
        return name

    def raw(self, name: str, data: bytes, **extra) -> str:
        self.blobs[name] = data
        self.files[name] = file_entry(data, **extra)
        return name


def prepare_directory(root: Path, index: str = MANIFEST) -> None:
    """Create ``root``; a previous set there (its ``index`` file lists its files) is removed
    file by file; any other non-empty directory is refused."""
    if root.exists():
        if not root.is_dir():
            raise GoldenFileError(f"{root}: exists and is not a directory")
        mpath = root / index
        if mpath.is_file():
            try:
                old = json.loads(mpath.read_text())
                names = list(old.get("files", {}))
            except (ValueError, AttributeError):
                names = []
            for name in names:
                f = root / name
                if f.is_file() and root.resolve() in f.resolve().parents:
                    f.unlink()
            mpath.unlink()
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
        if any(root.iterdir()):
            raise GoldenFileError(f"{root}: directory is not empty and is not a golden set; "
                                  f"refusing to write into it")
    root.mkdir(parents=True, exist_ok=True)


def write_golden_files(root, manifest: dict, writer: GoldenWriter):
    """Write ``writer``'s files and ``manifest`` (with its ``files`` table) into ``root``."""
    root = Path(root)
    prepare_directory(root)
    manifest = dict(manifest, files=writer.files)
    for name, data in writer.blobs.items():
        write_bytes(root / name, data)
    write_bytes(root / MANIFEST, dumps(manifest))
    return load_golden(root)
