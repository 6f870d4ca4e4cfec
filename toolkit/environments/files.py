"""``include_files``: the caller's files, selected and packed as an archive that travels with the bundle.

Patterns are files, directories (everything under them) and globs (``**``
included), relative to the caller's working directory, applied in order; a
pattern starting with ``!`` removes what earlier ones added. Refused before
anything is provisioned: a pattern that matches nothing, a path outside the
working directory, a total over the size limit, and a secret-looking file
(``.env``, ``*.pem``, ``id_rsa*``, ``*.key`` ...) swept in by a directory or a
glob rather than named on its own. The archive is a gzipped tar whose sha256
goes into the bundle's signed header; the job refuses it if it differs.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import IncludeFilesError

SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    ".netrc", ".pgpass", "*.p12", "*.pfx", "credentials.json",
)
_GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class Selected:
    path: Path
    name: str
    """Path inside the archive, relative to the working directory, '/'-separated."""
    explicit: bool
    """Named on its own by a pattern (not swept in by a directory or a glob)."""
    pattern: str


@dataclass(frozen=True)
class FilesArchive:
    """The packed archive, staged for the run storage, and what the bundle's header says of it."""

    path: Path
    digest: str
    size: int
    count: int

    @property
    def header(self) -> dict[str, object]:
        return {"digest": self.digest, "size": self.size, "count": self.count}


def looks_secret(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(base, pattern) for pattern in SECRET_PATTERNS)


def _relative(cwd: Path, path: Path, pattern: str) -> str:
    """``path`` relative to ``cwd`` ('/'-separated); refused when ``..`` leads outside it."""
    absolute = Path(os.path.normpath(path.absolute()))
    if absolute != cwd and cwd not in absolute.parents:
        raise IncludeFilesError(
            f"include_files pattern {pattern!r} reaches {absolute}, outside the working directory {cwd}. "
            "Patterns are relative to the caller's working directory; run from a directory that contains the files"
        )
    return absolute.relative_to(cwd).as_posix()


def _files_below(directory: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        found += [Path(root) / name for name in sorted(files)]
    return found


def _expand(pattern: str, cwd: Path) -> list[Selected]:
    if Path(pattern).is_absolute():
        raise IncludeFilesError(
            f"include_files pattern {pattern!r} is absolute; give paths relative to the working directory {cwd}"
        )
    matches: list[tuple[Path, bool]]
    if _GLOB_CHARACTERS & set(pattern):
        matches = [(match, False) for match in sorted(cwd.glob(pattern))]
    else:
        candidate = cwd / pattern
        matches = [(candidate, True)] if candidate.exists() else []
    selected: list[Selected] = []
    for match, named in matches:
        _relative(cwd, match, pattern)
        files = [(path, False) for path in _files_below(match)] if match.is_dir() else [(match, named)]
        for path, explicit in files:
            if path.is_file():
                selected.append(Selected(path, _relative(cwd, path, pattern), explicit, pattern))
    return selected


def select(patterns: list[str] | tuple[str, ...], cwd: Path, max_mb: float) -> list[Selected]:
    """The files ``patterns`` name, checked; raises ``IncludeFilesError`` before anything is packed."""
    cwd = cwd.resolve()
    chosen: dict[str, Selected] = {}
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        if not pattern.strip():
            raise IncludeFilesError(f"include_files has an empty pattern {raw!r}")
        matches = _expand(pattern, cwd)
        if negate:
            removed = [name for name in chosen if any(name == m.name for m in matches)
                       or fnmatch.fnmatch(name, pattern) or name.startswith(pattern.rstrip("/") + "/")]
            if not removed:
                raise IncludeFilesError(
                    f"include_files pattern {raw!r} excludes nothing: no file selected before it matches "
                    f"{pattern!r}. Fix the pattern or drop it"
                )
            for name in removed:
                del chosen[name]
            continue
        if not matches:
            raise IncludeFilesError(
                f"include_files pattern {raw!r} matches nothing in {cwd}. Patterns are relative to the "
                "caller's working directory; check the spelling or the directory you run from"
            )
        for item in matches:
            previous = chosen.get(item.name)
            chosen[item.name] = item if not previous or item.explicit else previous
    _check_secrets(chosen.values())
    _check_size(list(chosen.values()), max_mb)
    return sorted(chosen.values(), key=lambda item: item.name)


def _check_secrets(items: object) -> None:
    for item in items:  # type: ignore[attr-defined]
        if not item.explicit and looks_secret(item.name):
            raise IncludeFilesError(
                f"include_files pattern {item.pattern!r} sweeps in {item.name!r}, which looks like a secret "
                f"(matches one of {', '.join(SECRET_PATTERNS)}). Files travel unencrypted in run storage: pass "
                f"secrets as env=toolkit.secret(...), exclude it with '!{item.name}', or name it on its own "
                "to ship it deliberately"
            )


def _check_size(items: list[Selected], max_mb: float) -> None:
    sizes = [(item.path.stat().st_size, item.name) for item in items]
    total = sum(size for size, _ in sizes)
    if total > max_mb * 1024 * 1024:
        largest = ", ".join(f"{name} ({size / 1e6:.1f} MB)" for size, name in sorted(sizes, reverse=True)[:3])
        raise IncludeFilesError(
            f"include_files selects {total / 1e6:.1f} MB in {len(items)} files, over the limit of {max_mb:g} MB "
            f"(largest: {largest}). Exclude files with '!pattern', put large data in object storage, or raise "
            "include_files_max_mb"
        )


def pack(items: list[Selected], destination: Path) -> FilesArchive:
    """A reproducible gzipped tar of ``items`` (sorted, owner-free, mtime kept), written 0600."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for item in items:
            info = archive.gettarinfo(str(item.path), arcname=item.name)
            if not info.isfile():  # a symlink: ship what it points to
                stat = item.path.stat()
                info = tarfile.TarInfo(item.name)
                info.size, info.mode, info.mtime = stat.st_size, stat.st_mode & 0o777, int(stat.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with item.path.open("rb") as handle:
                archive.addfile(info, handle)
    data = buffer.getvalue()
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return FilesArchive(destination, hashlib.sha256(data).hexdigest(), len(data), len(items))
