"""include_files: selection rules, the secret and size guards, the archive and its check in the job."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from toolkit.bundles import unpack_files
from toolkit.environments import files
from toolkit.errors import BundleVerificationError, IncludeFilesError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "data" / "b.csv").write_text("x,y\n3,4\n")
    (tmp_path / "data" / "notes.txt").write_text("notes")
    (tmp_path / "config.yaml").write_text("k: v\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    return tmp_path


def names(selected: list[files.Selected]) -> list[str]:
    return [item.name for item in selected]


def test_files_directories_globs_and_negation(project: Path) -> None:
    assert names(files.select(["config.yaml"], project, 100)) == ["config.yaml"]
    assert names(files.select(["data"], project, 100)) == ["data/a.csv", "data/b.csv", "data/notes.txt"]
    assert names(files.select(["**/*.csv"], project, 100)) == ["data/a.csv", "data/b.csv"]
    assert names(files.select(["data", "!data/*.txt"], project, 100)) == ["data/a.csv", "data/b.csv"]
    assert names(files.select(["data", "!data/a.csv"], project, 100)) == ["data/b.csv", "data/notes.txt"]


def test_a_pattern_matching_nothing_is_an_error(project: Path) -> None:
    with pytest.raises(IncludeFilesError, match=r"pattern 'data/\*\.parquet' matches nothing in "):
        files.select(["data/*.parquet"], project, 100)
    with pytest.raises(IncludeFilesError, match=r"pattern 'missing.txt' matches nothing"):
        files.select(["missing.txt"], project, 100)
    with pytest.raises(IncludeFilesError, match=r"'!data/\*\.json' excludes nothing"):
        files.select(["data", "!data/*.json"], project, 100)


def test_paths_outside_the_working_directory_are_refused(project: Path) -> None:
    (project.parent / "outside.txt").write_text("no")
    with pytest.raises(IncludeFilesError, match=r"reaches .*outside.txt, outside the working directory"):
        files.select(["../outside.txt"], project, 100)
    with pytest.raises(IncludeFilesError, match=r"is absolute"):
        files.select([str(project / "config.yaml")], project, 100)


@pytest.mark.parametrize("secret", [".env", "server.pem", "id_rsa", "id_rsa.pub", "tls.key"])
def test_secret_looking_files_swept_in_by_a_glob_are_refused(project: Path, secret: str) -> None:
    (project / "data" / secret).write_text("SECRET=1")
    with pytest.raises(IncludeFilesError, match=rf"pattern 'data' sweeps in 'data/{secret}', which looks like a secret"):
        files.select(["data"], project, 100)
    with pytest.raises(IncludeFilesError, match="looks like a secret"):
        files.select(["data/*"], project, 100)
    # Named on its own, it is shipped deliberately; excluded, it is left behind.
    assert f"data/{secret}" in names(files.select(["data", f"data/{secret}"], project, 100))
    assert f"data/{secret}" not in names(files.select(["data", f"!data/{secret}"], project, 100))


def test_files_over_the_size_limit_are_refused(project: Path) -> None:
    (project / "data" / "big.bin").write_bytes(b"\0" * 300_000)
    with pytest.raises(IncludeFilesError, match=r"selects 0\.3 MB in 4 files, over the limit of 0\.2 MB \(largest: data/big.bin"):
        files.select(["data"], project, 0.2)
    assert files.select(["data", "!data/big.bin"], project, 0.2)


def test_archive_roundtrip_keeps_content_and_modes(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    staged = tmp_path_factory.mktemp("staging") / "files.tgz"
    archive = files.pack(files.select(["data", "run.sh"], project, 100), staged)
    assert archive.count == 4 and staged.stat().st_mode & 0o777 == 0o600
    data = staged.read_bytes()
    assert archive.digest == hashlib.sha256(data).hexdigest()
    job_dir = tmp_path_factory.mktemp("job")
    assert unpack_files(data, archive.header, job_dir, "files.tar.gz") == 4
    assert (job_dir / "data" / "b.csv").read_text() == "x,y\n3,4\n"
    assert (job_dir / "run.sh").stat().st_mode & 0o100  # still executable
    (job_dir / "data" / "a.csv").write_text("writable")  # the job's working directory is writable


def test_the_archive_is_reproducible(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = files.pack(files.select(["data"], project, 100), tmp_path_factory.mktemp("a") / "f.tgz")
    second = files.pack(files.select(["data"], project, 100), tmp_path_factory.mktemp("b") / "f.tgz")
    assert first.digest == second.digest


def test_a_tampered_archive_is_refused_before_anything_is_written(project: Path, tmp_path: Path) -> None:
    archive = files.pack(files.select(["data"], project, 100), tmp_path / "files.tgz")
    data = bytearray(archive.path.read_bytes())
    data[-10] ^= 0xFF
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with pytest.raises(BundleVerificationError, match="does not match the digest in the bundle's signed header"):
        unpack_files(bytes(data), archive.header, job_dir, "files.tar.gz")
    assert not any(job_dir.iterdir())


def test_an_archive_escaping_the_working_directory_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    data = buffer.getvalue()
    header = {"digest": hashlib.sha256(data).hexdigest()}
    with pytest.raises(BundleVerificationError, match=r"holds '\.\./escape\.txt', which may not be unpacked"):
        unpack_files(data, header, tmp_path, "files.tar.gz")
    assert not (tmp_path.parent / "escape.txt").exists()
