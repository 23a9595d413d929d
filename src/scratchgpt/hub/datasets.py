"""The public datasets that fine-tuning reads, downloaded by the same resumable, verifying code
as GPT-2's weights (:func:`.download.fetch_files`) into ``$SCRATCHGPT_CACHE/datasets/NAME``.

* ``sms-spam``: the UCI SMS Spam Collection, a zip from which we extract ``SMSSpamCollection``
  (one ``ham|spam<TAB>text`` line per message). Its sha256 is shipped here, so both the zip
  (before it is kept) and the extracted file are checked against it.
* ``spamassassin``: the SpamAssassin public corpus, five ``.tar.bz2`` groups of raw emails
  (``easy_ham``, ``easy_ham_2``, ``hard_ham``, ``spam``, ``spam_2``). Apache publishes no
  checksums and we ship none: each tarball is checked to be a bzip2 tar that reads to its end.
* ``instructions``: the book's 1,100 instruction/response pairs (``instruction-data.json``),
  checked against the sha256 we ship.
* ``alpaca``: Stanford Alpaca's 52,002 pairs (``alpaca_data.json``); the file has changed
  upstream over time, so no sha256 is shipped: every record is validated instead.
* ``preferences``: the book's 1,100 instructions each answered two ways, ``chosen`` (polite)
  and ``rejected`` (``instruction-data-with-preference.json``, for DPO), checked against the
  sha256 we ship and read through by the preference loader.
* ``mmlu``: the MMLU benchmark as its authors publish it, ``data.tar`` (166,184,960 bytes, the
  sha256 we ship is the one Hugging Face's ``hendrycks_test`` loader recorded for it),
  unpacked once verified into ``data/`` (``dev``, ``val``, ``test`` and ``auxiliary_train``
  CSV files), which is what ``--data mmlu`` reads.

Only fetching and checking live here; reading the messages is the loaders' job.
"""

from __future__ import annotations

import bz2
import hashlib
import re
import shutil
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from scratchgpt.data.corpus import default_cache_dir
from scratchgpt.data.instructions import InstructionDataError, load_instructions
from scratchgpt.data.preferences import load_preferences
from scratchgpt.hub.download import (
    CHUNK,
    Check,
    ContentError,
    check_download,
    fetch_files,
    mirror_url,
    read_manifest,
)
from scratchgpt.hub.names import local_or_downloaded

UCI_URL = "https://archive.ics.uci.edu/static/public/228/"
SPAMASSASSIN_URL = "https://spamassassin.apache.org/old/publiccorpus/"
SMS_SPAM_ZIP = "sms+spam+collection.zip"
SMS_SPAM_FILE = "SMSSpamCollection"
# UCI's SMSSpamCollection v.1 (5,574 messages, 477,907 bytes), computed from the file in the zip.
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
BOOK_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
            "01_main-chapter-code/")
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/"
INSTRUCTIONS_FILE = "instruction-data.json"
INSTRUCTIONS_SHA256 = "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
ALPACA_FILE = "alpaca_data.json"
BOOK_DPO_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
                "04_preference-tuning-with-dpo/")
PREFERENCES_FILE = "instruction-data-with-preference.json"
PREFERENCES_SHA256 = "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e"
MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/"
MMLU_TAR = "data.tar"
MMLU_SHA256 = "bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b"
MMLU_DIR = "data"
SPAMASSASSIN_FILES = ("20030228_easy_ham.tar.bz2", "20030228_easy_ham_2.tar.bz2",
                      "20030228_hard_ham.tar.bz2", "20030228_spam.tar.bz2",
                      "20050311_spam_2.tar.bz2")


def _check_zip(path: Path, member: str, sha256: str) -> None:
    """A zip archive whose every member matches its CRC-32, holding ``member`` with the
    ``sha256`` we ship: a zip that is readable but holds another file is refused as well."""
    expected = f"expected a zip archive holding {member}"
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise ContentError(f"{expected}, found member {broken} damaged (bad CRC-32)")
            if member not in archive.namelist():
                raise ContentError(f"{expected}, found only {', '.join(archive.namelist())}")
            digest = hashlib.sha256(archive.read(member)).hexdigest()
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ContentError(f"{expected}, found a file zip cannot read ({err})") from None
    if digest != sha256:
        raise ContentError(f"{expected} with sha256 {sha256}, found sha256 {digest}")


def _check_tar_bz2(path: Path) -> None:
    """A bzip2-compressed tar archive of at least one file, read to the end of its stream (a
    truncated or damaged one fails). It decompresses the whole file: about a second each."""
    expected = "expected a bzip2-compressed tar archive"
    try:
        with bz2.open(path) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
            files = sum(member.isfile() for member in tar)
            while stream.read(CHUNK):  # any bytes after the archive, to bzip2's end marker
                pass
    except (tarfile.TarError, EOFError, OSError) as err:  # bz2: OSError for bad data
        raise ContentError(f"{expected}, found a file that cannot be read ({err})") from None
    if not files:
        raise ContentError(f"{expected}, found one holding no files")


def _check_mmlu_tar(path: Path) -> None:
    """A tar archive holding MMLU's test files, ``data/test/SUBJECT_test.csv``. Only the
    members' headers are read (the archive is not compressed: the reader seeks past the
    data), so this is quick for the 166 MB file."""
    expected = "expected a tar archive of MMLU's CSV files"
    try:
        with tarfile.open(path) as tar:
            names = [member.name.removeprefix("./") for member in tar if member.isfile()]
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ContentError(f"{expected}, found a file tar cannot read ({err})") from None
    if not any(re.fullmatch(r"data/test/\w+_test\.csv", name) for name in names):
        found = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") or "no files"
        raise ContentError(f"{expected}, found none of data/test/*_test.csv ({found})")


def _unpack_tar(archive: Path, dest: Path) -> None:
    """Extract ``archive``'s directory ``dest.name`` to ``dest``, through ``dest.name.part``
    so that ``dest`` appears only once it is whole. Only plain files and directories inside
    the target are written (tarfile's ``data`` filter, where Python has it, says the same)."""
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    prefix = dest.name + "/"

    def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        for member in tar:
            name = member.name.removeprefix("./")
            inside = name.startswith(prefix) and ".." not in Path(name).parts
            if inside and (member.isfile() or member.isdir()):
                member.name = name
                yield member

    try:
        with tarfile.open(archive) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(part, members=members(tar), **safe)  # type: ignore[arg-type]
        shutil.rmtree(dest, ignore_errors=True)
        (part / dest.name).replace(dest)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    files = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {files:,} files extracted from {archive.name}", file=sys.stderr)


def _check_instructions(path: Path) -> None:
    """Instruction records that every fine-tuning can read (:func:`load_instructions`)."""
    try:
        load_instructions(path)
    except InstructionDataError as err:
        raise ContentError(f"expected instruction records, found: {err}") from None


def _check_preferences(path: Path) -> None:
    """Preference records that DPO can read (:func:`load_preferences`)."""
    try:
        load_preferences(path)
    except InstructionDataError as err:
        raise ContentError(f"expected preference records, found: {err}") from None


@dataclass(frozen=True)
class Dataset:
    """A public dataset as its publisher ships it, and what we check in each of its files."""

    urls: Mapping[str, str]  # {file name: the publisher's URL}, fetched in this order
    reads: str | None  # what a loader reads: one file of the download, or None for the directory
    kind: str  # "labelled" (texts with classes), "instructions" (instruction/response pairs),
    # "preferences" (instructions answered two ways) or "benchmark" (questions to score a model on)
    extract: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # {file: (zip, member)}
    unpack: Mapping[str, str] = field(default_factory=dict)  # {directory: tar it is unpacked from}
    sha256: Mapping[str, str] = field(default_factory=dict)  # the sha256 we ship, by file name
    checks: Mapping[str, Check] = field(default_factory=dict)  # content checks, by file name

    @property
    def needed(self) -> tuple[str, ...]:
        """The files that must be downloaded whole before a loader reads the dataset (an
        unpacked directory's: its archive)."""
        if self.reads in self.unpack:
            return (self.unpack[self.reads],)
        return (self.reads,) if self.reads else tuple(self.urls)


DATASETS: dict[str, Dataset] = {
    "sms-spam": Dataset(
        urls={SMS_SPAM_ZIP: UCI_URL + SMS_SPAM_ZIP},
        reads=SMS_SPAM_FILE,
        kind="labelled",
        extract={SMS_SPAM_FILE: (SMS_SPAM_ZIP, SMS_SPAM_FILE)},
        sha256={SMS_SPAM_FILE: SMS_SPAM_SHA256},
        checks={SMS_SPAM_ZIP: partial(_check_zip, member=SMS_SPAM_FILE,
                                      sha256=SMS_SPAM_SHA256)},
    ),
    "spamassassin": Dataset(
        urls={file: SPAMASSASSIN_URL + file for file in SPAMASSASSIN_FILES},
        reads=None,
        kind="labelled",
        checks=dict.fromkeys(SPAMASSASSIN_FILES, _check_tar_bz2),
    ),
    "instructions": Dataset(
        urls={INSTRUCTIONS_FILE: BOOK_URL + INSTRUCTIONS_FILE},
        reads=INSTRUCTIONS_FILE,
        kind="instructions",
        sha256={INSTRUCTIONS_FILE: INSTRUCTIONS_SHA256},
        checks={INSTRUCTIONS_FILE: _check_instructions},
    ),
    "alpaca": Dataset(
        urls={ALPACA_FILE: ALPACA_URL + ALPACA_FILE},
        reads=ALPACA_FILE,
        kind="instructions",
        checks={ALPACA_FILE: _check_instructions},
    ),
    "preferences": Dataset(
        urls={PREFERENCES_FILE: BOOK_DPO_URL + PREFERENCES_FILE},
        reads=PREFERENCES_FILE,
        kind="preferences",
        sha256={PREFERENCES_FILE: PREFERENCES_SHA256},
        checks={PREFERENCES_FILE: _check_preferences},
    ),
    "mmlu": Dataset(
        urls={MMLU_TAR: MMLU_URL + MMLU_TAR},
        reads=MMLU_DIR,
        kind="benchmark",
        unpack={MMLU_DIR: MMLU_TAR},
        sha256={MMLU_TAR: MMLU_SHA256},
        checks={MMLU_TAR: _check_mmlu_tar},
    ),
}


def dataset_names(kind: str) -> list[str]:
    """The shipped datasets of one kind: ``labelled``, ``instructions``, ``preferences`` or
    ``benchmark``."""
    return [name for name, dataset in DATASETS.items() if dataset.kind == kind]


def dataset_path(data: str, kind: str) -> Path:
    """What ``--data`` names (:mod:`.names`): an existing file or directory is read from there
    (in a directory that ``scratchgpt download NAME --dir DIR`` filled, what a loader reads of
    it); else a shipped dataset of ``kind`` is found in the download cache
    (:func:`find_dataset`); anything else is a path, which the loader reports missing."""

    def downloaded(name: str) -> Path:
        return find_dataset(name) if name in dataset_names(kind) else Path(name)

    path = local_or_downloaded(data, downloaded)
    manifest = read_manifest(path) if path.is_dir() else {}
    for name in dataset_names(kind):
        if manifest.keys() & DATASETS[name].urls.keys():  # a download of that dataset
            return find_dataset(name, path)
    return path


def datasets_dir() -> Path:
    """Where downloaded datasets live: ``$SCRATCHGPT_CACHE/datasets`` (``~/.cache/scratchgpt``)."""
    return default_cache_dir() / "datasets"


def get_dataset(name: str) -> Dataset:
    """The dataset called ``name``; ``ValueError`` listing the names if there is none."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def download_dataset(
    name: str,
    directory: str | Path | None = None,
    *,
    base_url: str | None = None,
    source_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch dataset ``name`` into ``directory`` (default: ``datasets_dir() / name``), verify
    and extract it, and return the directory. ``base_url`` and ``source_dir`` work as for
    GPT-2 (:func:`.download.download_gpt2`): a mirror keeping each URL's path, or a local
    directory holding the publisher's files under their own names. A directory unpacked from
    a tar is unpacked again when it is missing or its archive was fetched anew."""
    dataset = get_dataset(name)
    urls = {file: mirror_url(url, base_url) for file, url in dataset.urls.items()}
    target = Path(directory) if directory else datasets_dir() / name
    before = read_manifest(target) if target.is_dir() else {}
    fetch_files(urls, target, source_dir=source_dir, extract=dataset.extract,
                sha256=dataset.sha256, checks=dataset.checks, progress=progress)
    after = read_manifest(target)
    for unpacked, archive in dataset.unpack.items():
        if not (target / unpacked).is_dir() or before.get(archive) != after.get(archive):
            _unpack_tar(target / archive, target / unpacked)
    return target


def find_dataset(name: str, directory: Path | None = None) -> Path:
    """What a loader reads of the downloaded dataset ``name`` (in the cache, or in the
    ``directory`` it was downloaded to): the ``SMSSpamCollection`` file, the directory of
    SpamAssassin tarballs. ``FileNotFoundError`` with the command to run if it has not been
    downloaded (or not completely: each needed file's size is checked)."""
    dataset = get_dataset(name)
    command = f"scratchgpt download {name}" + (f" --dir {directory}" if directory else "")
    directory = directory or datasets_dir() / name
    if not read_manifest(directory):
        raise FileNotFoundError(f"{name} has not been downloaded; run: {command} (looked in "
                                f"{directory})")
    check_download(directory, dataset.needed, command=command)
    if dataset.reads in dataset.unpack and not (directory / dataset.reads).is_dir():
        raise FileNotFoundError(f"{directory / dataset.reads} is missing; run the download "
                                f"again: {command}")
    return directory / dataset.reads if dataset.reads else directory
