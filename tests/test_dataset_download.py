"""``scratchgpt download sms-spam|spamassassin|instructions|alpaca`` against a real HTTP
server on 127.0.0.1 (no network, no mocks), serving the shared copies under the publishers'
paths: UCI's zip (built here from ``sms-spam/SMSSpamCollection`` and a readme), Apache's five
SpamAssassin tarballs (three shared ones, and two small ones built here for the groups that are
not shared), the book's instruction data (shared) and an Alpaca-shaped file written here.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from file_server import FileServer, Route, file_servers

from scratchgpt.cli import main
from scratchgpt.hub.datasets import (
    DATASETS,
    SPAMASSASSIN_FILES,
    download_dataset,
    find_dataset,
)
from scratchgpt.hub.download import DownloadError, read_manifest

ZIP = "sms+spam+collection.zip"
SMS = "SMSSpamCollection"


@pytest.fixture
def serve() -> Iterator[Callable[..., FileServer]]:
    """``serve({file name: bytes}, drop_first=())`` serves each file at the path of its
    canonical URL (``/static/public/228/sms+spam+collection.zip``); shut down after the test."""
    paths = {file: urlsplit(url).path
             for dataset in DATASETS.values() for file, url in dataset.urls.items()}
    with file_servers() as start:
        yield lambda files, drop_first=(): start(
            {paths[file]: Route(data, drop_first=file in drop_first)
             for file, data in files.items()})


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_tar_bz2(group: str, messages: list[bytes]) -> bytes:
    """A tarball in the corpus's layout: ``GROUP/NNNNN.<md5 of the message>``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for number, message in enumerate(messages, start=1):
            info = tarfile.TarInfo(f"{group}/{number:05}.{hashlib.md5(message).hexdigest()}")
            info.size = len(message)
            tar.addfile(info, io.BytesIO(message))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sms_text(shared_assets: Path) -> bytes:
    return (shared_assets / "sms-spam" / SMS).read_bytes()


@pytest.fixture(scope="module")
def uci_zip(sms_text: bytes) -> bytes:
    """UCI's zip as it is published: the collection and its readme."""
    return make_zip({SMS: sms_text, "readme": b"SMS Spam Collection v.1\n"})


def small_tarballs() -> dict[str, bytes]:
    """Every SpamAssassin file name with a small tarball of its group: quick to verify."""
    message = b"From: a@example.com\nSubject: hello\n\nA short message.\n"
    return {file: make_tar_bz2(file.split("_", 1)[1].removesuffix(".tar.bz2"), [message])
            for file in SPAMASSASSIN_FILES}


@pytest.fixture(scope="module")
def apache_tarballs(shared_assets: Path) -> dict[str, bytes]:
    """The three shared tarballs, and small ones for the two groups that are not shared."""
    tarballs = small_tarballs()
    for file in ("20030228_easy_ham.tar.bz2", "20030228_easy_ham_2.tar.bz2",
                 "20030228_spam.tar.bz2"):
        tarballs[file] = (shared_assets / "spamassassin" / file).read_bytes()
    return tarballs


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHGPT_BASE_URL", raising=False)
    return tmp_path / "cache"


def test_the_publishers_urls() -> None:
    assert DATASETS["sms-spam"].urls == {
        ZIP: "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"}
    assert list(DATASETS["spamassassin"].urls.values()) == [
        "https://spamassassin.apache.org/old/publiccorpus/" + file for file in (
            "20030228_easy_ham.tar.bz2", "20030228_easy_ham_2.tar.bz2",
            "20030228_hard_ham.tar.bz2", "20030228_spam.tar.bz2", "20050311_spam_2.tar.bz2")]


def test_sms_spam_resumes_a_dropped_connection_extracts_and_is_found(
    serve, uci_zip: bytes, sms_text: bytes, cache: Path
) -> None:
    server = serve({ZIP: uci_zip}, drop_first=(ZIP,))
    directory = download_dataset("sms-spam", base_url=server.url, progress=False)

    assert directory == cache / "datasets" / "sms-spam"
    assert (directory / ZIP).read_bytes() == uci_zip
    assert (directory / SMS).read_bytes() == sms_text
    assert sorted(p.name for p in directory.iterdir()) == sorted([ZIP, SMS, "download.json"])
    # the first answer broke off halfway; the second asked for the rest
    assert [r for _, r in server.requests] == [None, f"bytes={len(uci_zip) // 2}-"]
    manifest = read_manifest(directory)
    assert manifest[ZIP]["url"] == server.url + "/static/public/228/sms+spam+collection.zip"
    assert manifest[ZIP]["verified"] == ["size", "content"]
    assert manifest[SMS] == {
        "url": f"{directory / ZIP}/{SMS}", "size": 477_907, "verified": ["size", "sha256"],
        "sha256": "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"}
    assert find_dataset("sms-spam") == directory / SMS

    # A second run finds both files verified and asks the server nothing; a deleted extracted
    # file is extracted again from the zip that was kept.
    server.requests.clear()
    download_dataset("sms-spam", base_url=server.url, progress=False)
    (directory / SMS).unlink()
    download_dataset("sms-spam", base_url=server.url, progress=False)
    assert server.requests == []
    assert (directory / SMS).read_bytes() == sms_text


def test_spamassassin_downloads_each_tarball_and_is_found(
    serve, apache_tarballs: dict[str, bytes], cache: Path
) -> None:
    """The real tarballs pass the content check (each is read through: about a second)."""
    server = serve(apache_tarballs)
    directory = download_dataset("spamassassin", base_url=server.url, progress=False)

    assert directory == cache / "datasets" / "spamassassin"
    assert [path for path, _ in server.requests] == [
        "/old/publiccorpus/" + file for file in SPAMASSASSIN_FILES]
    for file in SPAMASSASSIN_FILES:
        assert (directory / file).read_bytes() == apache_tarballs[file]
    manifest = read_manifest(directory)
    assert list(manifest) == list(SPAMASSASSIN_FILES)
    assert all(record["verified"] == ["size", "content"] for record in manifest.values())
    assert find_dataset("spamassassin") == directory


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


BAD_ZIPS = [  # how the zip is made bad, what the error says
    pytest.param(lambda data: b"<html>Service unavailable</html>", r"found a file zip cannot "
                 r"read \(File is not a zip file\)", id="junk"),
    pytest.param(lambda data: data[: len(data) // 2], r"found a file zip cannot read",
                 id="truncated"),
    pytest.param(lambda data: flip_byte(data, 100), r"found a file zip cannot read \(Error -3 "
                 r"while decompressing data", id="damaged-stream"),
    pytest.param(lambda data: flip_byte(make_zip({SMS: b"ham\thi\n"}, zipfile.ZIP_STORED),
                                        30 + len(SMS)),  # the first byte after its header
                 rf"found member {SMS} damaged \(bad CRC-32\)", id="damaged-member"),
    pytest.param(lambda data: make_zip({"readme": b"hello"}), r"found only readme",
                 id="without-the-collection"),
    pytest.param(lambda data: make_zip({SMS: b"ham\thello\n"}),
                 r"with sha256 7d039a24\w+, found sha256 \w+", id="another-collection"),
]


@pytest.mark.parametrize(("spoil", "expected"), BAD_ZIPS)
def test_a_corrupt_zip_is_refused_and_nothing_is_kept(
    spoil: Callable[[bytes], bytes], expected: str, serve, uci_zip: bytes, cache: Path
) -> None:
    server = serve({ZIP: spoil(uci_zip)})
    with pytest.raises(DownloadError, match=rf"{re.escape(ZIP)} from http://\S+ failed "
                       rf"verification: expected a zip archive holding {SMS}.*{expected}.*; the "
                       r"bad file was deleted, run the download again"):
        download_dataset("sms-spam", base_url=server.url, progress=False)
    # nothing was published, so the directory this download created is gone again
    assert not (cache / "datasets" / "sms-spam").exists()
    with pytest.raises(FileNotFoundError, match="sms-spam has not been downloaded"):
        find_dataset("sms-spam")


def test_a_junk_tarball_is_refused_and_what_came_before_it_is_kept(
    serve, tmp_path: Path
) -> None:
    tarballs = small_tarballs()
    tarballs["20030228_hard_ham.tar.bz2"] = b"junk\n"
    tarballs["20050311_spam_2.tar.bz2"] = bz2.compress(b"not a tar archive")
    server = serve(tarballs)
    with pytest.raises(DownloadError, match=r"20030228_hard_ham.tar.bz2 from \S+ failed "
                       r"verification: expected a bzip2-compressed tar archive, found a file "
                       r"that cannot be read \(Invalid data stream\)"):
        download_dataset("spamassassin", tmp_path, base_url=server.url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20030228_easy_ham.tar.bz2", "20030228_easy_ham_2.tar.bz2", "download.json"]

    # Fixed on the server, a second run fetches only what is missing, and stops at the next.
    tarballs["20030228_hard_ham.tar.bz2"] = small_tarballs()["20030228_hard_ham.tar.bz2"]
    server = serve(tarballs)
    with pytest.raises(DownloadError, match=r"20050311_spam_2.tar.bz2 .*expected a "
                       r"bzip2-compressed tar archive, found a file that cannot be read"):
        download_dataset("spamassassin", tmp_path, base_url=server.url, progress=False)
    assert [path.rsplit("/", 1)[1] for path, _ in server.requests] == [
        "20030228_hard_ham.tar.bz2", "20030228_spam.tar.bz2", "20050311_spam_2.tar.bz2"]
    assert list(read_manifest(tmp_path)) == list(SPAMASSASSIN_FILES[:4])
    assert not list(tmp_path.glob("*.part"))


def test_from_a_local_directory(
    shared_assets: Path, uci_zip: bytes, sms_text: bytes, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / ZIP).write_bytes(uci_zip)
    directory = download_dataset("sms-spam", tmp_path / "sms", source_dir=source,
                                 progress=False)
    assert (directory / SMS).read_bytes() == sms_text
    manifest = read_manifest(directory)
    assert manifest[ZIP]["verified"] == ["content"]  # a copy states nothing about itself
    assert manifest[SMS]["verified"] == ["size", "sha256"]

    (source / ZIP).write_bytes(b"junk")
    replace = re.escape(f"the copy was deleted; replace {source / ZIP} with a good copy")
    with pytest.raises(DownloadError, match=replace):
        download_dataset("sms-spam", tmp_path / "bad", source_dir=source, progress=False)
    with pytest.raises(FileNotFoundError, match=r"lacks 20030228_hard_ham.tar.bz2, "
                       r"20050311_spam_2.tar.bz2 \(expected 20030228_easy_ham.tar.bz2, "):
        download_dataset("spamassassin", tmp_path / "spam", progress=False,
                         source_dir=shared_assets / "spamassassin")
    assert not (tmp_path / "spam").exists()


def test_find_dataset_names_the_command_to_run(
    serve, uci_zip: bytes, cache: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"^sms-spam has not been downloaded; run: "
                       r"scratchgpt download sms-spam \(looked in "):
        find_dataset("sms-spam")
    with pytest.raises(FileNotFoundError, match="run: scratchgpt download spamassassin"):
        find_dataset("spamassassin")
    with pytest.raises(ValueError, match="unknown dataset 'enron'; choose one of sms-spam, "
                       "spamassassin, instructions, alpaca"):
        find_dataset("enron")

    # A download that stopped after the zip is an unfinished one, and says so.
    server = serve({ZIP: uci_zip})
    directory = download_dataset("sms-spam", base_url=server.url, progress=False)
    (directory / SMS).write_bytes(b"ham\thello\n")
    with pytest.raises(FileNotFoundError, match=rf"{SMS} is missing or incomplete; run the "
                       "download again: scratchgpt download sms-spam"):
        find_dataset("sms-spam")


def test_cli_download_datasets(
    serve, uci_zip: bytes, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve({ZIP: uci_zip, **small_tarballs()})
    assert main(["download", "sms-spam", "--base-url", server.url]) == 0
    assert capsys.readouterr().out == f"{cache / 'datasets' / 'sms-spam'}\n"
    out = tmp_path / "spam"
    assert main(["download", "spamassassin", "--dir", str(out), "--base-url", server.url]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert list(read_manifest(out)) == list(SPAMASSASSIN_FILES)
    copied = tmp_path / "copied"
    assert main(["download", "spamassassin", "--dir", str(copied), "--from", str(out)]) == 0
    assert capsys.readouterr().out == f"{copied}\n"
    shutil.rmtree(out)

    assert main(["download", "sms-spam", "--size", "355M"]) == 2
    assert capsys.readouterr().err == (
        "scratchgpt download: error: --size and --format choose a GPT-2; sms-spam has "
        "neither\n")
    assert main(["download", "spamassassin", "--dir", str(out), "--base-url",
                 server.url + "/nowhere"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert not out.exists()


def test_instruction_datasets_are_verified_and_found(
    serve, shared_assets: Path, cache: Path
) -> None:
    book = (shared_assets / "instructions" / "instruction-data.json").read_bytes()
    alpaca = json.dumps([{"instruction": "Give three tips for staying healthy.", "input": "",
                          "output": "Eat well, sleep, exercise."},
                         {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}])
    server = serve({"instruction-data.json": book, "alpaca_data.json": alpaca.encode()})
    for name, file in (("instructions", "instruction-data.json"),
                       ("alpaca", "alpaca_data.json")):
        directory = download_dataset(name, base_url=server.url, progress=False)
        assert find_dataset(name) == directory / file
    assert [path for path, _ in server.requests] == [
        "/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        "/tatsu-lab/stanford_alpaca/main/alpaca_data.json"]
    assert read_manifest(cache / "datasets" / "instructions")["instruction-data.json"][
        "verified"] == ["size", "sha256", "content"]
    assert read_manifest(cache / "datasets" / "alpaca")["alpaca_data.json"][
        "verified"] == ["size", "content"]


@pytest.mark.parametrize(("name", "file", "data", "expected"), [
    pytest.param("alpaca", "alpaca_data.json", b"<html>rate limited</html>",
                 r"expected instruction records, found: .*alpaca_data.json", id="not-json"),
    pytest.param("alpaca", "alpaca_data.json", b'[{"instruction": "Hi."}]',
                 r"expected instruction records, found: .*record 0.*output", id="no-output"),
    pytest.param("instructions", "instruction-data.json", b'[{"instruction": "a", '
                 b'"output": "b"}]', r"sha256", id="another-file"),
])
def test_a_file_that_is_not_the_instruction_data_is_refused(
    name: str, file: str, data: bytes, expected: str, serve, cache: Path
) -> None:
    server = serve({file: data})
    with pytest.raises(DownloadError, match=rf"{re.escape(file)} from \S+ failed "
                       rf"verification: .*{expected}"):
        download_dataset(name, base_url=server.url, progress=False)
    assert not (cache / "datasets" / name).exists()
