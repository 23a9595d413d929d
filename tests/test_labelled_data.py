"""Labelled texts from real files: the SMS Spam Collection, SpamAssassin's raw emails, and
CSV/TSV/JSONL files; and a clear error for each kind of bad input."""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from scratchgpt.data.labelled import LabelledTexts, load_labelled

SPAMASSASSIN_GROUPS = {  # tarball -> the group folder inside it
    "20030228_easy_ham.tar.bz2": "easy_ham",
    "20030228_easy_ham_2.tar.bz2": "easy_ham_2",
    "20030228_spam.tar.bz2": "spam",
}
HTML_QP_SPAM = "spam/00083.c1891c507954e5b75b72b16712e799bf"  # text/html, quoted-printable
BASE64_SPAM = "spam/00313.fab744bfd5a128fca39b69df9811c086"  # text/html, base64 + list footer


@pytest.fixture(scope="module")
def sms_file(shared_assets: Path) -> Path:
    return shared_assets / "sms-spam" / "SMSSpamCollection"


@pytest.fixture(scope="module")
def sms(sms_file: Path) -> LabelledTexts:
    return load_labelled(sms_file)


@pytest.fixture(scope="module")
def spamassassin(shared_assets: Path) -> LabelledTexts:
    """The three shared SpamAssassin groups, read once: a directory of tarballs."""
    return load_labelled(shared_assets / "spamassassin")


def email_bytes(body: str, subject: str | None = "Hello", **content: str) -> bytes:
    """A message made by the email package: ``content`` as for ``set_content`` (subtype,
    charset, cte)."""
    message = EmailMessage()
    if subject is not None:
        message["Subject"] = subject
    message["From"] = "someone@example.com"
    message.set_content(body, **content)
    return bytes(message)


def write_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:bz2") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def real_members(shared_assets: Path, tarball: str, names: set[str] | int) -> dict[str, bytes]:
    """Members of a shared tarball: those named, or the first ``names`` of them."""
    wanted = len(names) if isinstance(names, set) else names
    found = {}
    with tarfile.open(shared_assets / "spamassassin" / tarball) as archive:
        for member in archive:
            if member.isfile() and (isinstance(names, int) or member.name in names):
                found[member.name] = archive.extractfile(member).read()
            if len(found) == wanted:
                return found
    raise AssertionError(f"{tarball} lacks some of {names}")


# --- The SMS Spam Collection ---------------------------------------------------------------------


def test_sms_collection_loads_every_message(sms: LabelledTexts, sms_file: Path) -> None:
    assert len(sms) == 5574
    assert sms.counts() == {"ham": 4827, "spam": 747}
    assert sms.label_names == ["ham", "spam"]
    assert sms.skipped == {}
    assert sms.texts[0].startswith("Go until jurong point, crazy..")
    assert sms.labels[:3] == ["ham", "ham", "spam"]
    assert sms.summary() == f"5,574 texts from {sms_file}: ham 4,827 (86.6%), spam 747 (13.4%)"


def test_sms_zip_as_uci_ships_it(sms: LabelledTexts, sms_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "sms+spam+collection.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(sms_file, "SMSSpamCollection")
        archive.writestr("readme", "SMS Spam Collection v.1\n")
    from_zip = load_labelled(path)
    assert (from_zip.texts, from_zip.labels) == (sms.texts, sms.labels)
    assert from_zip.source == f"{path}/SMSSpamCollection"


def test_zip_without_the_collection(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme", "nothing here\n")
    with pytest.raises(ValueError, match=r"other\.zip: holds no SMSSpamCollection.*readme"):
        load_labelled(path)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken\.zip: not a readable zip file"):
        load_labelled(tmp_path / "broken.zip")


def test_sms_lines_with_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "SMSSpamCollection"
    cases = {
        "ham\thi\nspam no tab\n": r"SMSSpamCollection:2: no tab between the label and the text",
        "ham\thi\nhamm\tthere\n": r"SMSSpamCollection:2: unknown label 'hamm'",
        "ham\thi\nspam\t  \n": r"SMSSpamCollection:2: the text after the label is empty",
        "ham\thi\nham\tthere\n": r"every text has the label 'ham'.*at least two classes",
    }
    for content, message in cases.items():
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_labelled(path)


# --- SpamAssassin --------------------------------------------------------------------------------


def test_spamassassin_groups_load(spamassassin: LabelledTexts) -> None:
    # Every message of these three groups yields text (the three image-only spams keep their
    # subject), so nothing is skipped: 2,500 + 1,400 ham and 500 spam.
    assert spamassassin.skipped == {}
    assert spamassassin.counts() == {"ham": 2500 + 1400, "spam": 500}
    assert all(text.strip() for text in spamassassin.texts)
    for text in spamassassin.texts:
        text.encode("utf-8")  # no lone surrogates: each can be written to a JSONL split


def test_spamassassin_text_is_subject_blank_line_body(spamassassin: LabelledTexts) -> None:
    perl_news = next(t for t in spamassassin.texts if t.startswith("[use Perl] Stories for"))
    subject, body = perl_news.split("\n\n", 1)
    assert re.fullmatch(r"\[use Perl\] Stories for 2002-\d\d-\d\d", subject)
    assert body.startswith("use Perl Daily Newsletter")
    assert all("  " not in line and "\t" not in line for line in perl_news.splitlines())
    assert "\n\n\n" not in perl_news


def test_real_html_quoted_printable_and_bad_base64(shared_assets: Path, tmp_path: Path) -> None:
    members = real_members(shared_assets, "20030228_spam.tar.bz2", {HTML_QP_SPAM, BASE64_SPAM})
    html_qp, base64_html = load_labelled(write_tarball(tmp_path / "spam.tar.bz2", members)).texts
    # HTML sent quoted-printable: text without tags or =3D escapes
    assert html_qp.startswith("Low Cost Easy to Use Conferencing\n\nLowest Rate Services")
    assert "Only 18 Cents Per Minute!" in html_qp
    assert "<" not in html_qp and "=3D" not in html_qp
    # base64 HTML whose mailing list appended a plain-text footer: still decoded
    assert "Degerli SMSTR kullanicimiz" in base64_html
    assert "PGh0bWw" not in base64_html and "<" not in base64_html


def test_mime_decoding(tmp_path: Path) -> None:
    plain_and_html = EmailMessage()
    plain_and_html["Subject"] = "=?utf-8?q?Caf=C3=A9_news?="
    plain_and_html.set_content("the plain version")
    plain_and_html.add_alternative("<p>the <b>HTML</b> version</p>", subtype="html")
    plain_and_html.add_attachment(b"%PDF", maintype="application", subtype="pdf")
    html = (
        "<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
        "<body><p>Win &pound;1000 &amp; more</p><div>now</div></body></html>"
    )
    messages = {
        "1-base64": email_bytes("décodé from base64", charset="utf-8", cte="base64"),
        "2-qp": email_bytes(
            "naïve quoted-printable " * 5, charset="latin-1", cte="quoted-printable"
        ),
        "3-html": email_bytes(html, subtype="html"),
        "4-alternative": bytes(plain_and_html),
        "5-unknown-charset": b"Subject: odd\nContent-Type: text/plain; charset=x-klingon\n\n"
        b"qapla\xe9\n",
        "6-no-charset-8bit": b"Subject: latin\n\ncaf\xe9 cr\xe8me\n",
        "7-bad-base64": b"Subject: b64\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=!!!\n",
        "8-no-subject": email_bytes("just a body", subject=None),
    }
    members = {f"spam/{name}": raw for name, raw in messages.items()}
    data = load_labelled(write_tarball(tmp_path / "spam.tar.bz2", members))
    assert data.skipped == {}
    assert data.texts == [
        "Hello\n\ndécodé from base64",
        "Hello\n\n" + " ".join(["naïve quoted-printable"] * 5),
        "Hello\n\nWin £1000 & more\n\nnow",
        "Café news\n\nthe plain version",
        "odd\n\nqaplaé",
        "latin\n\ncafé crème",
        "b64\n\nhello world",
        "just a body",
    ]
    assert data.labels == ["spam"] * len(messages)


def test_broken_messages_are_skipped_and_counted(shared_assets: Path, tmp_path: Path) -> None:
    members = real_members(shared_assets, "20030228_spam.tar.bz2", 3)
    members |= {
        "spam/cmds": b"mv 00001.7848dde101aa985090474a91ec93fcf0 spam\n",  # the index: not mail
        "spam/empty": b"",
        "spam/not-an-email": b"\x89PNG\r\n\x1a\n\x00\x00binary",
        "spam/headers-only": b"From: a@example.com\nTo: b@example.com\n\n",
        "spam/damaged-header": b"Subject: hi\nContent-Type: text/plain; b*\n\nbody\n",
    }
    data = load_labelled(write_tarball(tmp_path / "20030228_spam.tar.bz2", members))
    assert len(data) == 3
    assert data.skipped == {
        "not an email (no headers)": 2,
        "no text (no subject, no text body)": 1,
        # the email package itself raises IndexError on this header (Python 3.10 to 3.13)
        "could not be parsed (IndexError)": 1,
    }
    assert data.summary().endswith(
        "; skipped 4 (1 could not be parsed (IndexError), 1 no text (no subject, no text body), "
        "2 not an email (no headers))"
    )


def test_extracted_folders_equal_tarballs(shared_assets: Path, tmp_path: Path) -> None:
    tarballs, folders = tmp_path / "tarballs", tmp_path / "folders"
    tarballs.mkdir()
    for tarball, group in SPAMASSASSIN_GROUPS.items():
        members = real_members(shared_assets, tarball, 40)
        members[f"{group}/cmds"] = b"mv 1 2\n"
        write_tarball(tarballs / tarball, members)
        for name, data in members.items():  # what tar xjf would leave
            (folders / name).parent.mkdir(parents=True, exist_ok=True)
            (folders / name).write_bytes(data)
    assert sorted(p.name for p in folders.iterdir()) == ["easy_ham", "easy_ham_2", "spam"]
    from_tarballs, from_folders = load_labelled(tarballs), load_labelled(folders)
    assert from_tarballs.counts() == {"ham": 80, "spam": 40}
    assert (from_folders.texts, from_folders.labels, from_folders.skipped) == (
        from_tarballs.texts,
        from_tarballs.labels,
        from_tarballs.skipped,
    )


def test_group_label_comes_from_its_name(tmp_path: Path) -> None:
    for group in ("hard_ham", "spam_2", "misc"):
        (tmp_path / group).mkdir()
        (tmp_path / group / "00001").write_bytes(email_bytes(f"in {group}"))
    with pytest.raises(ValueError, match=r"misc: cannot tell whether this group is ham or spam"):
        load_labelled(tmp_path)
    (tmp_path / "misc" / "00001").unlink()
    (tmp_path / "misc").rmdir()
    data = load_labelled(tmp_path)
    assert list(zip(data.labels, data.texts, strict=True)) == [
        ("ham", "Hello\n\nin hard_ham"),
        ("spam", "Hello\n\nin spam_2"),
    ]


def test_a_single_group_is_one_class(tmp_path: Path) -> None:
    """One tarball is one group, so one class; a classifier's data joins ham and spam groups."""
    path = write_tarball(tmp_path / "g.tar.bz2", {"easy_ham/1": email_bytes("hi")})
    assert load_labelled(path).counts() == {"ham": 1}
    only_spam = tmp_path / "only-spam"
    (only_spam / "spam").mkdir(parents=True)
    (only_spam / "spam" / "1").write_bytes(email_bytes("buy"))
    with pytest.raises(ValueError, match="every text has the label 'spam'"):
        load_labelled(only_spam)


def test_paths_that_are_not_labelled_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"labelled data not found: .*nowhere\.csv"):
        load_labelled(tmp_path / "nowhere.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: holds no SpamAssassin groups"):
        load_labelled(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("label\ttext\nham\thi\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not labelled data that scratchgpt can"):
        load_labelled(tmp_path / "notes.txt")
    (tmp_path / "bad.tar.bz2").write_bytes(b"not bzip2")
    with pytest.raises(ValueError, match=r"bad\.tar\.bz2: not a readable \.tar\.bz2"):
        load_labelled(tmp_path / "bad.tar.bz2")


def test_field_names_only_for_files_with_columns(sms_file: Path) -> None:
    with pytest.raises(ValueError, match="SMSSpamCollection: text_field and label_field name"):
        load_labelled(sms_file, text_field="message")


# --- CSV, TSV and JSONL --------------------------------------------------------------------------


def test_csv_tsv_jsonl_hold_the_sms_collection(sms: LabelledTexts, tmp_path: Path) -> None:
    rows = list(zip(sms.texts, sms.labels, strict=True))
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        with open(tmp_path / f"sms{suffix}", "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter=delimiter)
            writer.writerow(["id", "message", "category"])
            writer.writerows((i, text, label) for i, (text, label) in enumerate(rows))
    with open(tmp_path / "sms.jsonl", "w", encoding="utf-8") as file:
        for text, label in rows:
            file.write(json.dumps({"message": text, "category": label}) + "\n")
    for name in ("sms.csv", "sms.tsv", "sms.jsonl"):
        data = load_labelled(tmp_path / name, text_field="message", label_field="category")
        assert (data.texts, data.labels) == (sms.texts, sms.labels), name
        assert data.source == str(tmp_path / name)


def test_any_number_of_classes(tmp_path: Path) -> None:
    (tmp_path / "topics.csv").write_text(
        '\ufefftext,label\n"Stocks fell, then rose",business\n"A ""quoted""\nline",sport\n'
        "\nRain tomorrow,weather\n",
        encoding="utf-8",
    )
    data = load_labelled(tmp_path / "topics.csv")
    assert data.texts == ["Stocks fell, then rose", 'A "quoted"\nline', "Rain tomorrow"]
    assert data.label_names == ["business", "sport", "weather"]
    (tmp_path / "stars.jsonl").write_text(
        '{"text": "great", "label": 5}\n{"text": "bad", "label": 1}\n'
    )
    assert load_labelled(tmp_path / "stars.jsonl").labels == ["5", "1"]


OK_LINE = '{"text": "a", "label": "x"}\n'  # a JSONL line without a mistake
BAD_FILES = [  # file name, content, what the error must say (file, line, field)
    ("a.csv", "text,label\nhello,ham\n,spam\n", r"a\.csv:3: the text \(field 'text'\) is empty"),
    ("a.csv", "text,label\nhello,ham\nbye,\n", r"a\.csv:3: the label \(field 'label'\) is empty"),
    ("a.csv", "text,label\nhi,ham\nbye\n", r"a\.csv:3: 1 fields .* has 2: no value for 'label'"),
    ("a.csv", 'text,label\n"2\nlines",ham\nx,y,z\n', r"a\.csv:4: 3 fields .*holds a comma"),
    ("a.csv", "text,label\nhello,ham\nbye,ham\n", r"a\.csv: every text has the label 'ham'"),
    ("a.csv", "text,label\n", r"a\.csv: holds no labelled texts"),
    ("a.csv", "", r"a\.csv: is empty; expected a header row"),
    ("a.csv", "text\tlabel\nhello\tham\n", r"a\.csv:1: .*looks tab-separated.*as \.tsv"),
    ("a.tsv", "text,label\nhello,ham\n", r"a\.tsv:1: .*looks comma-separated.*as \.csv"),
    ("a.csv", "text;label\nhello;ham\n", r"a\.csv:1: .*looks semicolon-separated"),
    (
        "a.csv",
        "body,class\nhello,ham\n",
        r"a\.csv:1: no column 'text' \(found columns: 'body', 'class'\); name the right column "
        "with --text-field",
    ),
    ("a.csv", "text,kind\nhi,ham\n", r"a\.csv:1: no column 'label' \(found columns: 'text', 'kind"),
    ("a.jsonl", OK_LINE + '{"text": "b",}\n', r"a\.jsonl:2: not valid JSON .*one JSON object"),
    ("a.jsonl", OK_LINE + '["b", "y"]\n', r"a\.jsonl:2: expected a JSON object, found list"),
    (
        "a.jsonl",
        OK_LINE + '{"body": "b", "label": "y"}\n',
        r"a\.jsonl:2: no field 'text' \(found fields: 'body', 'label'\)",
    ),
    ("a.jsonl", OK_LINE + '{"text": "b"}\n', r"a\.jsonl:2: no field 'label'"),
    (
        "a.jsonl",
        OK_LINE + '{"text": "b", "label": null}\n',
        r"a\.jsonl:2: the label \(field 'label'\) is missing \(null\)",
    ),
    (
        "a.jsonl",
        OK_LINE + '{"text": "b", "label": " "}\n',
        r"a\.jsonl:2: the label \(field 'label'\) is empty",
    ),
    (
        "a.jsonl",
        OK_LINE + '{"text": "", "label": "y"}\n',
        r"a\.jsonl:2: the text \(field 'text'\) is empty",
    ),
    (
        "a.jsonl",
        OK_LINE + '{"text": 7, "label": "y"}\n',
        r"a\.jsonl:2: the text \(field 'text'\) is 7, not a string",
    ),
    (
        "a.jsonl",
        OK_LINE + '{"text": "b", "label": [1]}\n',
        r"a\.jsonl:2: the label \(field 'label'\) is \[1\]; a label is a string or an integer",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_labelled_files(name: str, content: str, message: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_labelled(tmp_path / name)


def test_field_names_in_errors_follow_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("message,category\nhello,ham\nbye,\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.csv:3: the label \(field 'category'\) is empty"):
        load_labelled(path, text_field="message", label_field="category")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"text,label\nhello,ham\ncaf\xe9,spam\n")
    with pytest.raises(ValueError, match=r"a\.csv:3: byte 0xe9 is not valid UTF-8"):
        load_labelled(path)
