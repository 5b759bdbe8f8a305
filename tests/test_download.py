"""resolve_source: --source folders/archives/files, the cache, checksummed resumable downloads.

No test touches the network: archives are built here, downloads come from ``file://`` URLs or
a fake opener substituted for ``dwrec.data.download._urlopen``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from dwrec.data import download as dl
from dwrec.data.sources import RemoteFile, SourceSpec
from dwrec.errors import ChecksumError, DwrecError, UsageError
from dwrec.paths import raw_dir

PAYLOAD = {"data/ratings.dat": b"1::10::5::100\n2::10::4::200\n", "data/movies.dat": b"10::A::B\n"}


def _spec(remote: tuple[RemoteFile, ...] = (), manual: str = "") -> SourceSpec:
    return SourceSpec(
        name="toy",
        family="movielens",
        description="toy",
        domains="genres",
        licence="test",
        size="tiny",
        reader=lambda folder, options: None,  # type: ignore[arg-type,return-value]
        remote=remote,
        manual_download=manual,
    )


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remote_for(archive: Path, **changes) -> RemoteFile:
    fields = dict(
        url=archive.as_uri(),
        sha256=_sha256(archive),
        filename="toy.zip",
        size=archive.stat().st_size,
    )
    fields.update(changes)
    return RemoteFile(**fields)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("DWREC_OFFLINE", raising=False)


# --------------------------------------------------------------------------- --source


def test_source_folder_is_returned_as_is(tmp_path):
    assert dl.resolve_source(_spec(), tmp_path) == tmp_path


def test_source_single_raw_file_is_returned_as_is(tmp_path):
    raw = tmp_path / "ratings.dat"
    raw.write_bytes(b"1::2::3::4\n")
    assert dl.resolve_source(_spec(), raw) == raw


def test_missing_source_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match="nope.zip: no such file"):
        dl.resolve_source(_spec(), tmp_path / "nope.zip")


def test_zip_source_is_extracted_once_into_the_cache(tmp_path):
    archive = _zip(tmp_path / "mine.zip", PAYLOAD)
    folder = dl.resolve_source(_spec(), archive)
    assert folder == raw_dir("toy") / f"extracted-{_sha256(archive)[:8]}"
    for name, data in PAYLOAD.items():
        assert (folder / name).read_bytes() == data
    marker = folder / "data" / "marker"
    marker.write_text("kept")
    assert dl.resolve_source(_spec(), archive) == folder
    assert marker.exists(), "a second call must reuse the extracted folder"


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_tar_sources_are_extracted(tmp_path, suffix, mode):
    archive = tmp_path / f"mine{suffix}"
    with tarfile.open(archive, mode) as tf:
        for name, data in PAYLOAD.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    folder = dl.resolve_source(_spec(), archive)
    assert (folder / "data" / "ratings.dat").read_bytes() == PAYLOAD["data/ratings.dat"]


@pytest.mark.parametrize("member", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt"])
def test_zip_member_escaping_the_folder_is_refused(tmp_path, member):
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"x", member: b"evil"})
    with pytest.raises(DwrecError, match="refusing to extract member"):
        dl.resolve_source(_spec(), archive)
    cache = raw_dir("toy")
    assert not list(cache.glob("extracted-*")), "nothing may appear under the final name"
    assert not list(cache.glob(".extracting-*")), "the temporary folder must be removed"
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_pointing_out_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = 0o120777 << 16  # a symbolic link, as Info-ZIP stores it
        zf.writestr(info, "../../../etc/passwd")
    with pytest.raises(DwrecError, match="points out"):
        dl.resolve_source(_spec(), archive)


def _tar_with_link(path: Path, name: str, target: str, kind=tarfile.SYMTYPE) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        data = b"1::2::3::4\n"
        info = tarfile.TarInfo("data/ratings.dat")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(name)
        link.type = kind
        link.linkname = target
        tf.addfile(link)
    return path


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd"])
def test_tar_symlink_pointing_out_is_refused(tmp_path, target):
    archive = _tar_with_link(tmp_path / "bad.tar.gz", "data/link", target)
    with pytest.raises(DwrecError, match="points out"):
        dl.resolve_source(_spec(), archive)
    assert not list(raw_dir("toy").glob("extracted-*"))


def test_tar_hard_link_pointing_out_is_refused(tmp_path):
    archive = _tar_with_link(tmp_path / "bad.tgz", "data/hard", "../x", kind=tarfile.LNKTYPE)
    with pytest.raises(DwrecError, match="points out"):
        dl.resolve_source(_spec(), archive)


def test_tar_symlink_inside_the_folder_is_allowed(tmp_path):
    archive = _tar_with_link(tmp_path / "ok.tar.gz", "data/alias.dat", "ratings.dat")
    folder = dl.resolve_source(_spec(), archive)
    assert (folder / "data" / "alias.dat").read_bytes() == b"1::2::3::4\n"


def test_corrupt_zip_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DwrecError, match="broken.zip: not a readable zip"):
        dl.resolve_source(_spec(), archive)


def test_given_official_archive_must_match_its_pinned_checksum(tmp_path):
    archive = _zip(tmp_path / "toy.zip", PAYLOAD)
    actual = _sha256(archive)
    remote = _remote_for(archive, sha256="ab" * 32)
    with pytest.raises(ChecksumError) as err:
        dl.resolve_source(_spec((remote,)), archive)
    assert actual in str(err.value) and "ab" * 32 in str(err.value)
    assert archive.exists(), "a user's own file is never deleted"


# --------------------------------------------------------------------------- cache and offline


def test_offline_error_names_source_flag_and_cache_folder(tmp_path):
    archive = _zip(tmp_path / "toy.zip", PAYLOAD)
    with pytest.raises(dl.OfflineError) as err:
        dl.resolve_source(_spec((_remote_for(archive),)), None)
    message = str(err.value)
    assert "--source" in message and str(raw_dir("toy")) in message
    assert "DWREC_OFFLINE=1" in message and "toy.zip" in message


def test_network_failure_fails_fast_with_the_same_advice(tmp_path, online, monkeypatch):
    def unreachable(request, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(dl, "_urlopen", unreachable)
    remote = RemoteFile(url="https://example.invalid/toy.zip", sha256="0" * 64, filename="toy.zip")
    with pytest.raises(dl.OfflineError) as err:
        dl.resolve_source(_spec((remote,)), None)
    message = str(err.value)
    assert "Name or service not known" in message
    assert "--source" in message and str(raw_dir("toy")) in message


def test_manual_download_dataset_says_where_to_get_files():
    spec = _spec(manual="Download it from https://example.org/terms after accepting them.")
    with pytest.raises(DwrecError) as err:
        dl.resolve_source(spec, None)
    message = str(err.value)
    assert "https://example.org/terms" in message and "--source" in message
    assert str(raw_dir("toy")) in message


def test_files_placed_by_hand_in_the_cache_are_used_without_download(tmp_path):
    folder = raw_dir("toy")
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_bytes(PAYLOAD["data/ratings.dat"])
    remote = RemoteFile(url="https://example.invalid/toy.zip", sha256="0" * 64, filename="toy.zip")
    assert dl.resolve_source(_spec((remote,)), None) == folder
    assert dl.resolve_source(_spec(manual="get it by hand"), None) == folder


def test_archive_placed_in_the_cache_is_verified_and_extracted(tmp_path):
    archive = _zip(tmp_path / "toy.zip", PAYLOAD)
    remote = _remote_for(archive)
    folder = raw_dir("toy")
    folder.mkdir(parents=True)
    (folder / "toy.zip").write_bytes(archive.read_bytes())
    extracted = dl.resolve_source(_spec((remote,)), None)
    assert extracted == folder / f"extracted-{remote.sha256[:8]}"
    assert (extracted / "data" / "movies.dat").read_bytes() == PAYLOAD["data/movies.dat"]


def test_archive_placed_in_the_cache_with_wrong_checksum_is_reported(tmp_path):
    archive = _zip(tmp_path / "toy.zip", PAYLOAD)
    folder = raw_dir("toy")
    folder.mkdir(parents=True)
    (folder / "toy.zip").write_bytes(archive.read_bytes())
    with pytest.raises(ChecksumError, match="delete .*toy.zip"):
        dl.resolve_source(_spec((_remote_for(archive, sha256="cd" * 32),)), None)


# --------------------------------------------------------------------------- downloads


def test_download_from_url_is_verified_extracted_and_not_repeated(tmp_path, online, monkeypatch):
    archive = _zip(tmp_path / "served.zip", PAYLOAD)
    remote = _remote_for(archive)
    folder = dl.resolve_source(_spec((remote,)), None, progress=True)
    assert (folder / "data" / "ratings.dat").read_bytes() == PAYLOAD["data/ratings.dat"]
    assert (raw_dir("toy") / "toy.zip").read_bytes() == archive.read_bytes()
    assert not (raw_dir("toy") / "toy.zip.part").exists()

    def no_network(request, timeout):
        raise AssertionError("must not download again")

    monkeypatch.setattr(dl, "_urlopen", no_network)
    assert dl.resolve_source(_spec((remote,)), None) == folder


def test_download_checksum_mismatch_names_both_hashes_and_deletes_file(tmp_path, online):
    archive = _zip(tmp_path / "served.zip", PAYLOAD)
    actual = _sha256(archive)
    remote = _remote_for(archive, sha256="ef" * 32)
    with pytest.raises(ChecksumError) as err:
        dl.resolve_source(_spec((remote,)), None)
    assert actual in str(err.value) and "ef" * 32 in str(err.value)
    assert not list(raw_dir("toy").glob("toy.zip*")), "the bad download must be deleted"


def test_md5_only_pin_is_verified_with_md5(tmp_path, online):
    archive = _zip(tmp_path / "served.zip", PAYLOAD)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    good = _remote_for(archive, sha256="", md5=md5)
    assert dl.download(good, tmp_path / "ok").read_bytes() == archive.read_bytes()
    bad = _remote_for(archive, sha256="", md5="0" * 32)
    with pytest.raises(ChecksumError, match=f"md5 is {md5}"):
        dl.download(bad, tmp_path / "bad")


class _FakeResponse:
    """An HTTP response over ``data``; raises after ``fail_after`` bytes when set."""

    def __init__(self, data: bytes, status: int, fail_after: int | None = None):
        self._body = io.BytesIO(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}
        self._left = fail_after

    def read(self, n: int) -> bytes:
        if self._left is not None:
            if self._left <= 0:
                raise ConnectionResetError("connection reset by peer")
            n = min(n, self._left)
            self._left -= n
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_interrupted_download_resumes_with_a_range_request(tmp_path, online, monkeypatch):
    archive = _zip(tmp_path / "served.zip", {"big.bin": os.urandom(50_000)})
    content = archive.read_bytes()
    remote = _remote_for(archive, url="https://example.org/toy.zip")
    ranges: list[str | None] = []

    def flaky(request, timeout):
        header = request.get_header("Range")
        ranges.append(header)
        if header is None:
            return _FakeResponse(content, 200, fail_after=20_000)
        start = int(header.removeprefix("bytes=").rstrip("-"))
        return _FakeResponse(content[start:], 206)

    monkeypatch.setattr(dl, "_urlopen", flaky)
    with pytest.raises(DwrecError, match="run the command again to resume"):
        dl.download(remote, tmp_path / "cache")
    assert (tmp_path / "cache" / "toy.zip.part").stat().st_size == 20_000
    final = dl.download(remote, tmp_path / "cache")
    assert ranges == [None, "bytes=20000-"]
    assert final.read_bytes() == content


def test_server_ignoring_range_restarts_from_zero(tmp_path, online, monkeypatch):
    archive = _zip(tmp_path / "served.zip", PAYLOAD)
    content = archive.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip.part").write_bytes(b"garbage!")
    monkeypatch.setattr(dl, "_urlopen", lambda request, timeout: _FakeResponse(content, 200))
    remote = _remote_for(archive, url="https://example.org/toy.zip")
    assert dl.download(remote, cache).read_bytes() == content


def test_complete_part_file_is_verified_without_a_request(tmp_path, online, monkeypatch):
    archive = _zip(tmp_path / "served.zip", PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip.part").write_bytes(archive.read_bytes())

    def no_network(request, timeout):
        raise AssertionError("the .part file is already complete")

    monkeypatch.setattr(dl, "_urlopen", no_network)
    remote = _remote_for(archive, url="https://example.org/toy.zip")
    assert dl.download(remote, cache).read_bytes() == archive.read_bytes()


def test_file_digests_follow_file_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"first")
    assert dl.file_digests(path)["sha256"] == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second, longer")
    digests = dl.file_digests(path)
    assert digests["sha256"] == hashlib.sha256(b"second, longer").hexdigest()
    assert digests["md5"] == hashlib.md5(b"second, longer").hexdigest()
