"""Labelled texts: what a classifier learns from, read from the files they come in.

A classifier is trained on pairs (text, label). :func:`load_labelled` reads them from

- the SMS Spam Collection: ``label<TAB>text`` per line, no header (recognised by its content),
  the UCI zip it ships in, or a directory holding its ``SMSSpamCollection`` file (as
  ``scratchgpt download sms-spam`` leaves it);
- the SpamAssassin public corpus: a group tarball (``20030228_easy_ham.tar.bz2``), a directory
  of such tarballs, or a directory of their extracted group folders (``easy_ham/``, ``spam/``).
  Each file is one raw email; the text is its subject and its text body, and the label comes
  from the group's name;
- any CSV, TSV or JSONL file with a text and a label column, with any number of classes.

Real mail is messy, so an email that cannot be read is skipped and counted, never a crash.
A labelled file with a mistake in it is an error that names the file, the line and the field.
"""

from __future__ import annotations

import binascii
import csv
import email
import email.policy
import io
import re
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from email.errors import InvalidBase64LengthDefect
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from scratchgpt.data.corpus import json_lines

SMS_FILE_NAME = "SMSSpamCollection"
SPAM_LABELS = ("ham", "spam")
DELIMITERS = {".csv": ",", ".tsv": "\t"}
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}
INDEX_FILE_NAME = "cmds"  # each SpamAssassin group's list of the commands that built it


@dataclass(frozen=True)
class LabelledTexts:
    """Texts and their labels (class names as strings), where they came from, and what was
    skipped on the way (reason -> count)."""

    texts: list[str]
    labels: list[str]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """The classes, sorted: the order a classifier numbers them in."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """How many texts each class has, in :attr:`label_names` order."""
        counts = Counter(self.labels)
        return {name: counts[name] for name in sorted(counts)}

    def summary(self) -> str:
        """One line for a person: how many texts of each class, from where, and what was skipped.

        ``5,574 texts from SMSSpamCollection: ham 4,827 (86.6%), spam 747 (13.4%)``
        """
        classes = ", ".join(
            f"{name} {count:,} ({count / len(self):.1%})" for name, count in self.counts().items()
        )
        line = f"{len(self):,} texts from {self.source}: {classes or 'none'}"
        if self.skipped:
            reasons = ", ".join(f"{count:,} {why}" for why, count in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values()):,} ({reasons})"
        return line


def load_labelled(
    path: str | Path, *, text_field: str | None = None, label_field: str | None = None
) -> LabelledTexts:
    """The labelled texts in ``path``; what it is decides how it is read (see the module's
    docstring). ``text_field`` and ``label_field`` name the columns of a CSV, TSV or JSONL file
    (defaults ``text`` and ``label``). The data must hold at least two classes, except a single
    SpamAssassin group tarball: a group is one class by design."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labelled data not found: {path}")
    if path.is_file() and path.suffix in (".csv", ".tsv", ".jsonl"):
        fields = (text_field or "text", label_field or "label")
        read = read_jsonl if path.suffix == ".jsonl" else read_delimited
        return check_classes(read(path, *fields))
    if text_field is not None or label_field is not None:
        raise ValueError(
            f"{path}: text_field and label_field name the columns of a .csv, .tsv or .jsonl "
            "file, and this is not one; leave them out"
        )
    if path.is_dir():
        if (path / SMS_FILE_NAME).is_file():
            return load_labelled(path / SMS_FILE_NAME)
        return load_spamassassin(path)
    if path.name.endswith(".tar.bz2"):
        return read_email_groups([path], str(path))
    if path.suffix == ".zip":
        return read_sms_zip(path)
    data = path.read_bytes()
    if data.startswith(tuple(f"{label}\t".encode() for label in SPAM_LABELS)):
        return check_classes(read_sms(utf8_text(data, path), str(path)))
    raise ValueError(
        f"{path}: not labelled data that scratchgpt can read. It reads the SMS Spam Collection "
        "(lines 'ham<TAB>text' or 'spam<TAB>text') or its .zip, SpamAssassin .tar.bz2 groups "
        "(or a directory of them), and .csv, .tsv or .jsonl files with a text and a label column"
    )


def check_classes(data: LabelledTexts) -> LabelledTexts:
    """``data``, if it has at least two classes: a classifier with one has nothing to learn."""
    if not data.texts:
        raise ValueError(f"{data.source}: holds no labelled texts")
    if len(data.label_names) < 2:
        raise ValueError(
            f"{data.source}: every text has the label {data.labels[0]!r}, and a classifier needs "
            "at least two classes; add texts of another class (or check the label column)"
        )
    return data


def utf8_text(data: bytes, source: str | Path) -> str:
    """``data`` as UTF-8 (a leading byte-order mark dropped); an error names the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{source}:{line}: byte 0x{data[err.start]:02x} is not valid UTF-8; "
            "save the file as UTF-8"
        ) from None


# --- The SMS Spam Collection -------------------------------------------------------------------


def read_sms(text: str, source: str) -> LabelledTexts:
    """The SMS Spam Collection's ``label<TAB>text`` lines (``source`` names it in errors)."""
    texts, labels = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        label, tab, message = line.partition("\t")
        where = f"{source}:{number}"
        if not tab:
            raise ValueError(f"{where}: no tab between the label and the text")
        if label not in SPAM_LABELS:
            raise ValueError(f"{where}: unknown label {label!r}; each line starts ham or spam")
        if not message.strip():
            raise ValueError(f"{where}: the text after the label is empty")
        texts.append(message)
        labels.append(label)
    return LabelledTexts(texts, labels, source)


def read_sms_zip(path: Path) -> LabelledTexts:
    """The SMS Spam Collection inside UCI's ``sms+spam+collection.zip``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            inner = next((n for n in names if PurePosixPath(n).name == SMS_FILE_NAME), None)
            if inner is None:
                raise ValueError(
                    f"{path}: holds no {SMS_FILE_NAME} (it holds {', '.join(names) or 'nothing'})"
                )
            data = archive.read(inner)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a readable zip file ({err}); download it again") from None
    source = f"{path}/{inner}"
    return check_classes(read_sms(utf8_text(data, source), source))


# --- CSV, TSV and JSONL --------------------------------------------------------------------------


def read_delimited(path: Path, text_field: str, label_field: str) -> LabelledTexts:
    """A ``.csv`` (commas) or ``.tsv`` (tabs) file whose first row names its columns."""
    delimiter = DELIMITERS[path.suffix]
    rows = csv.reader(
        io.StringIO(utf8_text(path.read_bytes(), path), newline=""), delimiter=delimiter
    )
    try:
        header = next(rows, [])
        if not header:
            raise ValueError(f"{path}: is empty; expected a header row naming the columns")
        columns = [
            check_column(path, header, delimiter, name) for name in (text_field, label_field)
        ]
        texts, labels = [], []
        line = rows.line_num + 1  # where the next record starts
        for row in rows:
            where, line = f"{path}:{line}", rows.line_num + 1
            if not row:
                continue
            if len(row) > len(header):
                raise ValueError(
                    f"{where}: {len(row)} fields where the header has {len(header)}; "
                    f"quote any text that holds a {DELIMITER_NAMES[delimiter]}"
                )
            if len(row) < len(header):
                missing = ", ".join(repr(name) for name in header[len(row) :])
                raise ValueError(
                    f"{where}: {len(row)} fields where the header has {len(header)}: "
                    f"no value for {missing}"
                )
            text, label = (row[column] for column in columns)
            texts.append(check_text(where, text_field, text))
            labels.append(check_label(where, label_field, label))
    except csv.Error as err:
        raise ValueError(f"{path}:{rows.line_num}: {err}") from None
    return LabelledTexts(texts, labels, str(path))


def check_column(path: Path, header: list[str], delimiter: str, name: str) -> int:
    """The index of column ``name`` in ``header``; if absent, an error that says what is there,
    and whether the file seems to be separated by another character than its suffix says."""
    if name in header:
        return header.index(name)
    if len(header) == 1:
        for other, other_name in DELIMITER_NAMES.items():
            if other != delimiter and other in header[0]:
                raise ValueError(
                    f"{path}:1: the header is one column, {header[0]!r}: the file looks "
                    f"{other_name}-separated, but a {path.suffix} file is read as "
                    f"{DELIMITER_NAMES[delimiter]}-separated; save it with commas as .csv "
                    "or with tabs as .tsv"
                )
    found = ", ".join(repr(column) for column in header)
    raise ValueError(
        f"{path}:1: no column {name!r} (found columns: {found}); name the right column with "
        "--text-field/--label-field (text_field=/label_field=)"
    )


def read_jsonl(path: Path, text_field: str, label_field: str) -> LabelledTexts:
    """A JSON Lines file: one object per line with a text and a label field."""
    texts, labels = [], []
    for where, record in json_lines(utf8_text(path.read_bytes(), path), path):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(record).__name__}")
        for name in (text_field, label_field):
            if name not in record:
                found = ", ".join(repr(key) for key in record) or "none"
                raise ValueError(
                    f"{where}: no field {name!r} (found fields: {found}); name the right field "
                    "with --text-field/--label-field (text_field=/label_field=)"
                )
        text, label = record[text_field], record[label_field]
        if not isinstance(text, str):
            raise ValueError(f"{where}: the text (field {text_field!r}) is {text!r}, not a string")
        if label is None:
            raise ValueError(f"{where}: the label (field {label_field!r}) is missing (null)")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ValueError(
                f"{where}: the label (field {label_field!r}) is {label!r}; "
                "a label is a string or an integer"
            )
        texts.append(check_text(where, text_field, text))
        labels.append(check_label(where, label_field, str(label)))
    return LabelledTexts(texts, labels, str(path))


def check_text(where: str, name: str, text: str) -> str:
    """``text``, unless it is empty (``where`` and the field ``name`` name it in the error)."""
    if not text.strip():
        raise ValueError(
            f"{where}: the text (field {name!r}) is empty; fill it in or drop the line"
        )
    return text


def check_label(where: str, name: str, label: str) -> str:
    """``label`` without spaces around it, unless that leaves nothing."""
    label = label.strip()
    if not label:
        raise ValueError(f"{where}: the label (field {name!r}) is empty; every text needs one")
    return label


# --- The SpamAssassin corpus: raw emails in labelled groups ------------------------------------


def load_spamassassin(directory: Path) -> LabelledTexts:
    """A directory of SpamAssassin group tarballs or, failing that, of extracted group folders
    (if both are there, the tarballs are read: they hold the same messages)."""
    tarballs = sorted(directory.glob("*.tar.bz2"))
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    if not tarballs and not folders:
        raise ValueError(
            f"{directory}: holds no SpamAssassin groups: expected .tar.bz2 tarballs or their "
            f"extracted folders (easy_ham/, spam/, ...), or the SMS Spam Collection's "
            f"{SMS_FILE_NAME} file; a .csv, .tsv, .jsonl or .zip file is read when named itself"
        )
    return check_classes(read_email_groups(tarballs or folders, str(directory)))


def group_label(group: str) -> str:
    """``ham`` or ``spam``, from a group's name (``easy_ham_2``, ``20030228_spam``)."""
    labels = [label for label in SPAM_LABELS if label in group.lower()]
    if len(labels) != 1:
        raise ValueError(
            f"{group}: cannot tell whether this group is ham or spam; its name must hold "
            "'ham' or 'spam' (as easy_ham/, hard_ham/ and spam/ do)"
        )
    return labels[0]


def read_email_groups(groups: list[Path], source: str) -> LabelledTexts:
    """The emails in each group (a tarball or a folder), labelled by the folder they are in,
    in the order of their group and file names (the same for a tarball and its extraction)."""
    messages: list[tuple[str, str, bytes]] = []  # group, file name, raw bytes
    for group in groups:
        messages += read_tarball(group) if group.is_file() else read_folder(group)
    label_of = {group: group_label(group) for group, _, _ in messages}
    texts, labels, skipped = [], [], Counter()
    for group, _, raw in sorted(messages):
        try:
            texts.append(email_text(raw))
        except SkippedEmail as skip:
            skipped[skip.reason] += 1
            continue
        labels.append(label_of[group])
    return LabelledTexts(texts, labels, source, dict(skipped))


def read_tarball(path: Path) -> list[tuple[str, str, bytes]]:
    """(group, name, bytes) of each email in a group tarball; the group is the folder a file is
    in (``easy_ham/00001.7c53...`` -> ``easy_ham``), or the tarball's name for a file at the top.
    """
    messages = []
    try:
        with tarfile.open(path, "r:bz2") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted is None or name.name == INDEX_FILE_NAME:
                    continue
                group = name.parent.name or path.name.split(".")[0]
                messages.append((group, name.name, extracted.read()))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .tar.bz2 ({err}); download it again") from None
    return messages


def read_folder(folder: Path) -> list[tuple[str, str, bytes]]:
    """(group, name, bytes) of each email in an extracted group folder."""
    return [
        (folder.name, file.name, file.read_bytes())
        for file in folder.iterdir()
        if file.is_file() and file.name != INDEX_FILE_NAME
    ]


class SkippedEmail(Exception):
    """A message that yields no text, and the reason (counted in :attr:`LabelledTexts.skipped`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def email_text(raw: bytes) -> str:
    """The subject, a blank line and the text body of a raw RFC 822 message, whitespace tidied.
    A message that yields no text raises :class:`SkippedEmail`."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        subject = tidy(str(message.get("subject", "")))
        body = tidy(email_body(message))
    # The email package turns most damage into "defects" and reads on, but real-world mail
    # still finds paths that raise; whatever they raise, the message is skipped and counted.
    except Exception as err:
        raise SkippedEmail(f"could not be parsed ({type(err).__name__})") from err
    if not message.keys():
        raise SkippedEmail("not an email (no headers)")
    if not subject and not body:
        raise SkippedEmail("no text (no subject, no text body)")
    return f"{subject}\n\n{body}".strip()


def email_body(message: EmailMessage) -> str:
    """The text of a message's ``text/plain`` parts, or failing those, of its ``text/html``
    parts turned into text; attachments are not the body."""
    plain, html = [], []
    for part in message.walk():
        if part.is_multipart() or part.is_attachment():
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            plain.append(decoded_payload(part))
        elif kind == "text/html":
            html.append(html_to_text(decoded_payload(part)))
    return "\n\n".join(plain or html)


def decoded_payload(part: Message) -> str:
    """A part's text: its transfer encoding undone (base64, quoted-printable), then its bytes
    decoded with the declared charset. A charset that is missing, unknown or wrong falls back to
    UTF-8, then to Windows-1252 (what undeclared 8-bit mail of the corpus's era mostly is)."""
    payload = part.get_payload(decode=True) or b""
    # The email package keeps what it can of damaged quoted-printable and base64, except base64
    # of the wrong length, which it hands back still encoded: decode the base64 lines it begins
    # with (a mailing list that appends its footer to an encoded body leaves it so).
    if any(isinstance(defect, InvalidBase64LengthDefect) for defect in part.defects):
        payload = leading_base64(str(part.get_payload()))
    for charset in (part.get_content_charset(), "utf-8"):
        if charset:
            try:
                return payload.decode(charset)
            except (LookupError, UnicodeDecodeError):
                pass
    return payload.decode("windows-1252", errors="replace")


BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+=*")


def leading_base64(encoded: str) -> bytes:
    """The bytes of the base64 lines at the start of ``encoded``, up to the first other line."""
    lines = []
    for line in encoded.splitlines():
        if not BASE64_LINE.fullmatch(line.strip()):
            break
        lines.append(line.strip())
    data = "".join(lines)
    return binascii.a2b_base64(data[: len(data) // 4 * 4])


def tidy(text: str) -> str:
    """Each run of spaces and tabs as one space, lines stripped, at most one blank line."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class HTMLText(HTMLParser):
    """Collects the text of an HTML document: no tags, no scripts or styles, entities decoded,
    a line break wherever a block (paragraph, row, list item...) starts or ends."""

    HIDDEN = {"script", "style"}
    BLOCKS = {"br", "p", "div", "table", "tr", "td", "th", "ul", "ol", "li", "hr", "pre"}
    BLOCKS |= {"blockquote", "title", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.hidden = 0  # how many script/style elements we are inside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.pieces.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.pieces.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.pieces.append(data)


def html_to_text(html: str) -> str:
    """The text a reader sees in ``html``."""
    parser = HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.pieces)
