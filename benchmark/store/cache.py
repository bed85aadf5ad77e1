"""Content-addressed store of trained backbones, extracted features and attack outputs
(``benchmark/cell/attack_cache.py``).

A cache that cannot be written (a read-only folder, a path that is a file, a disk that fills) never costs the
work: the entry is kept in this process's memory for the rest of the run, with one warning per cache folder.

Entries are keyed by a hash of everything that determines them (see ``benchmark/cell/keys.py``), written atomically
(temp file then rename, so a crash never leaves a half-written entry under the final name), checksummed (sha256 in a
sidecar file; a truncated or corrupt entry is reported, deleted and rebuilt, never loaded), and read back with
``torch.load(weights_only=True)`` so a cache file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.core.errors import BenchmarkError
from benchmark.core.files import unwritable

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".cache") / "benchmark"
KINDS = ("backbone", "features", "attack")
# the temp files of _atomic_write: ".<entry name>.<random>.tmp"
_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\.(pt|json)\.[A-Za-z0-9_]+\.tmp")


def cache_root(explicit: str | Path | None = None) -> Path:
    """--cache-dir, else $BENCHMARK_CACHE, else ./.cache/benchmark."""
    return Path(explicit or os.environ.get("BENCHMARK_CACHE") or DEFAULT_CACHE)


@dataclass
class CacheEntry:
    kind: str
    key: str
    path: Path
    size: int
    meta: dict[str, Any]


# entries that could not be written, as their serialised bytes, by (cache root, kind, key): the rest of this run
# reads them from here (a worker process of the Ray executor has its own)
_IN_MEMORY: dict[tuple[str, str, str], bytes] = {}
_WARNED: set[str] = set()


class Cache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = cache_root(root)

    def unwritable(self) -> str | None:
        """Why an entry cannot be written under the root (a file in the way, no permission), or None."""
        return unwritable(self.root)

    def warn_if_unwritable(self) -> None:
        """Said once per root (the cells then do not repeat it): what a run trains is kept, but trained again."""
        problem = self.unwritable()
        if problem and str(self.root) not in _WARNED:
            _WARNED.add(str(self.root))
            log.warning("warning: cache %s cannot be written (%s): what this run trains is kept in memory until it "
                        "ends, and trained again by the next run", self.root, problem)

    def _keep_in_memory(self, kind: str, key: str, data: bytes, err: OSError) -> None:
        _IN_MEMORY[(str(self.root), kind, key)] = data
        if str(self.root) not in _WARNED:
            _WARNED.add(str(self.root))
            log.warning("warning: cache %s cannot be written (%s): what this run trains is kept in memory until "
                        "it ends",
                        self.root, err.strerror or err)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stored object, or None when absent or corrupt (a corrupt entry is logged and removed)."""
        path = self._path(kind, key)
        held = _IN_MEMORY.get((str(self.root), kind, key))
        if held is not None:
            return torch.load(io.BytesIO(held), map_location="cpu", weights_only=True)
        if not path.exists():
            return None
        sidecar = path.with_suffix(".json")
        try:
            data = path.read_bytes()
            meta = json.loads(sidecar.read_text())
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt, truncated, missing sidecar: rebuild rather than trust
            log.warning("cache entry %s/%s is corrupt (%s); it will be rebuilt", kind, key, err)
            for p in (path, sidecar):
                p.unlink(missing_ok=True)
            return None

    def has(self, kind: str, key: str) -> bool:
        """Whether an entry is there (complete: its sidecar is written last, or held in memory); its checksum is
        checked on load."""
        held = (str(self.root), kind, key) in _IN_MEMORY
        return held or self._path(kind, key).with_suffix(".json").exists()

    def save(self, kind: str, key: str, obj: dict[str, Any], meta: dict[str, Any] | None = None) -> Path | None:
        """Write an entry; None when it could not be written and is kept in memory instead (see the module)."""
        path = self._path(kind, key)
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        info = dict(meta or {}, sha256=hashlib.sha256(data).hexdigest(), kind=kind, key=key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
            # the sidecar is written last: an entry without it is incomplete and treated as corrupt
            _atomic_write(path.with_suffix(".json"), json.dumps(info, sort_keys=True, default=str).encode())
        except OSError as err:  # the work is kept: a trained model is never discarded for a cache write
            self._keep_in_memory(kind, key, data, err)
            return None
        return path

    def entries(self) -> list[CacheEntry]:
        out = []
        if not self.root.exists():
            return out
        if not self.root.is_dir():
            raise BenchmarkError(f"--cache-dir {self.root}: not a folder")
        for sidecar in sorted(self.root.glob("*/*.json")):
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                meta = {}
            pt = sidecar.with_suffix(".pt")
            out.append(
                CacheEntry(sidecar.parent.name, sidecar.stem, pt, pt.stat().st_size if pt.exists() else 0, meta)
            )
        return out

    def clear(self, kind: str | None = None) -> int:
        """Remove entries (of one kind, or all); returns how many were removed.

        Only what this cache wrote goes: entry files whose sidecar names them (kind and key), and leftover temp
        files of its atomic writes. Anything else under the root (a user's files, a folder named by mistake with
        --cache-dir) stays, and so do the folders that still hold it.
        """
        n = 0
        for entry in self.entries():
            if kind is not None and entry.kind != kind:
                continue
            if entry.meta.get("kind") != entry.kind or entry.meta.get("key") != entry.key:
                continue  # a .json that this cache did not write
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(".json").unlink(missing_ok=True)
            n += 1
        for folder in self._kind_dirs(kind):
            for tmp in folder.glob(".*.tmp"):
                if _TEMP_NAME.fullmatch(tmp.name):
                    tmp.unlink(missing_ok=True)
            _rmdir_if_empty(folder)
        if kind in (None, "attack"):  # the lock files of attack_cache, one per attack key
            for lock in (self.root / "locks").glob("attack-*.lock"):
                lock.unlink(missing_ok=True)
            _rmdir_if_empty(self.root / "locks")
        if kind is None:
            _rmdir_if_empty(self.root)
        return n

    def _kind_dirs(self, kind: str | None) -> list[Path]:
        kinds = (kind,) if kind else KINDS
        return [self.root / k for k in kinds if (self.root / k).is_dir()]


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (files that are not ours), or already gone
        pass


def _file_mode() -> int:
    """0666 less the umask, as ``open()`` would create it: mkstemp's 0600 would hide an entry from the other
    users of a cache on a shared filesystem."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
