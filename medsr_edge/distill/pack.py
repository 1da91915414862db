"""Training data packed to travel: a zip (files stored as they are: already compressed PNG, JPEG
and DICOM) of the ``train`` and ``val`` images of a data folder, under a size budget, with the
``<modality>/<source>/<split>/`` layout and the data set's licence manifest kept.

A GPU machine that receives only the working tree (``../shared`` does not travel) trains from it:
every trainer accepts the pack wherever it accepts a data folder.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from ..core.files import atomic_write, file_sha256
from ..runtime.io import count_by_modality, iter_image_files

PACK_MANIFEST = "PACK.json"
MIB = 1 << 20


def pack_data(data: str | Path, out: str | Path, budget_mib: float = 50.0,
              splits: tuple[str, ...] = ("val", "train")) -> dict:
    """Write ``out`` (a .zip) holding as much of ``splits`` as fits ``budget_mib``; returns its manifest.

    Each modality (first folder under ``data``) gets an equal share of the budget, and what one
    modality does not use goes to the others. Within a modality the validation images come first
    (training monitors them), then training images in an even stride over the sorted file list,
    so every source and patient block is represented. Nothing is recompressed."""
    data, out = Path(data), Path(out)
    by_mod: dict[str, list[Path]] = {}
    for split in splits:
        for f in iter_image_files([data]):
            rel = f.relative_to(data).parts
            if len(rel) > 2 and split in rel[:-1]:
                by_mod.setdefault(rel[0], []).append(f)
    if not by_mod:
        raise FileNotFoundError(f"no {'/'.join(splits)} images under {data}")
    for mod, files in by_mod.items():  # val first (kept in order), then training files in a stride order
        val = [f for f in files if "val" in f.relative_to(data).parts[:-1]]
        seen = set(val)
        rest = [f for f in files if f not in seen]
        by_mod[mod] = val + _stride_order(rest)
    extras = [data / name for name in ("MANIFEST.tsv", "README.md") if (data / name).is_file()]
    budget = int(budget_mib * MIB) - sum(f.stat().st_size for f in extras) - 4096
    chosen: list[Path] = []
    mods = sorted(by_mod, key=lambda m: sum(f.stat().st_size for f in by_mod[m]))  # smallest first
    remaining = budget
    for i, mod in enumerate(mods):
        share = remaining // (len(mods) - i)
        used = 0
        for f in by_mod[mod]:
            # the file, its two zip headers (about 80 bytes + the name twice) and its PACK.json line
            size = f.stat().st_size + 200 + 3 * len(f.relative_to(data).as_posix())
            if used + size > share:
                continue
            chosen.append(f)
            used += size
        remaining -= used
    manifest = {"source": str(data), "budget_mib": budget_mib, "splits": list(splits), "files": {}}
    for f in chosen:
        rel = f.relative_to(data).as_posix()
        manifest["files"][rel] = file_sha256(f)
    manifest["images_per_modality"] = count_by_modality(rel.split("/")[0] for rel in manifest["files"])

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for f in chosen:
                zf.write(f, f.relative_to(data).as_posix())
            for extra in extras:
                zf.write(extra, extra.name)
            zf.writestr(PACK_MANIFEST, json.dumps(manifest, indent=1))

    atomic_write(out, write)
    manifest["bytes"] = out.stat().st_size
    return manifest


def _stride_order(files: list[Path]) -> list[Path]:
    """Files reordered so that any prefix is spread evenly over the sorted list (bit reversal)."""
    n = len(files)
    if n < 2:
        return list(files)
    bits = (n - 1).bit_length()
    order = sorted(range(n), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    return [files[i] for i in order]


def resolve_data(data: str | Path) -> Path:
    """A data folder as is; a pack (.zip) extracted once into a cache folder named by its hash."""
    data = Path(data)
    if data.is_dir() or not zipfile.is_zipfile(data):
        return data
    digest = file_sha256(data)[:16]
    cache = Path(os.environ.get("MEDSR_EDGE_CACHE") or Path.home() / ".cache" / "medsr-edge") / "packs" / digest
    if not (cache / PACK_MANIFEST).is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache.parent))
        with zipfile.ZipFile(data) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ValueError(f"{data}: unsafe path {name!r} in the pack")
            zf.extractall(tmp)
        try:
            os.replace(tmp, cache)
        except OSError:  # another process unpacked it first
            pass
    return cache
