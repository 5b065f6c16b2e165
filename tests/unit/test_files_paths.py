"""Path normalisation and validation of `files.*` payloads: what is made safe, what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aios_schemas import FilesList, FilesRead, FilesShare, FilesWrite, Syscall, normalise_path, split_owner
from aios_schemas.files import MAX_DEPTH, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, PathError


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("a.txt", "a.txt"),
        ("dir/sub/a.txt", "dir/sub/a.txt"),
        ("./a.txt", "a.txt"),
        ("a//b///c", "a/b/c"),
        ("a/./b/.", "a/b"),
        ("dir/", "dir"),
        ("caf\u0065\u0301.txt", "caf\u00e9.txt"),  # NFD -> NFC: one spelling per name
        ("名前/ファイル.txt", "名前/ファイル.txt"),
        ("with space.txt", "with space.txt"),
        ("a..b", "a..b"),  # dots inside a name are fine
        ("...", "..."),
        ("@agent-b/x/y", "@agent-b/x/y"),
        ("@agent-b/./x//y", "@agent-b/x/y"),
        ("~", "~"),
    ],
)
def test_normalised(raw: str, safe: str) -> None:
    assert normalise_path(raw) == safe


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "./",
        "/",
        "/etc/passwd",
        "//server/share",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "a/b/../../..",
        "a\\b",
        "..\\x",
        "C:\\x",
        "a\x00b",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\x7fb",
        "a\u0085b",  # C1 control
        "a\u200bb",  # zero-width space
        "a\u200db",  # zero-width joiner
        "evil\u202etxt.exe",  # right-to-left override
        "a\ufeffb",  # BOM
        "a\u2028b",  # line separator
        "a\u00a0b",  # no-break space
        "a\u3000b",  # ideographic space
        "\ue000",  # private use
        "\uff0e\uff0e/x",  # fullwidth '..'
        "\uff0e",
        "a\uff0fb",  # fullwidth solidus
        "a\u2215b",  # division slash (compatibility normalisation keeps it: refused by name)
        "a\u2044b",  # fraction slash
        "a\uff3cb",  # fullwidth backslash
        " a",
        "a ",
        "a/ b",
        "@agent-b",  # an owner and nothing in it
        "@agent-b/",
        "@/x",
        "@a.b/x",  # not an agent name
        "@agent-b/@agent-c/x",
        "x/@y",
        "a" * (MAX_SEGMENT_BYTES + 1),
        "é" * (MAX_SEGMENT_BYTES // 2 + 1),  # bytes, not characters
        "/".join(["a"] * (MAX_DEPTH + 1)),
        "/".join(["a" * 200] * 6),  # over MAX_PATH_BYTES
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(PathError):
        normalise_path(raw)


def test_bounds_are_exact() -> None:
    assert normalise_path("a" * MAX_SEGMENT_BYTES) == "a" * MAX_SEGMENT_BYTES
    deep = "/".join(["a"] * MAX_DEPTH)
    assert normalise_path(deep) == deep
    long = "/".join(["b" * 100] * 10)[:MAX_PATH_BYTES]
    assert len(normalise_path(long).encode()) <= MAX_PATH_BYTES


def test_empty_only_where_allowed() -> None:
    assert normalise_path("", allow_empty=True) == ""
    assert normalise_path("@agent-b", allow_empty=True) == "@agent-b/"
    assert FilesList(prefix="").prefix == ""
    with pytest.raises(ValidationError):
        FilesRead(path="")


def test_split_owner() -> None:
    assert split_owner("a/b") == (None, "a/b")
    assert split_owner("@agent-b/a/b") == ("agent-b", "a/b")
    assert split_owner("@agent-b/") == ("agent-b", "")


def test_payloads_validate_paths_at_the_boundary() -> None:
    """A bad path fails as a validation error where the syscall is parsed (invalid_request on the
    bus), in every field that holds one."""
    for bad in ("../x", "/abs", "a\x00b", "a\u202eb"):
        with pytest.raises(ValidationError):
            FilesWrite(path=bad, content=b"")
        with pytest.raises(ValidationError):
            FilesList(prefix=bad)
        with pytest.raises(ValidationError):
            FilesShare(path=bad, grantee="agent-b")
        raw = (
            '{"id": "0123456789ab", "agent": "a", "payload": {"kind": "files.read", "path": '
            + f'"{bad.encode("unicode_escape").decode()}"'
            + "}}"
        )
        with pytest.raises(ValidationError):
            Syscall.model_validate_json(raw)


def test_payloads_forbid_unknown_fields() -> None:
    """No field can name an owner or an author: the caller is the kernel's to say."""
    for field in ("owner", "agent", "author"):
        with pytest.raises(ValidationError):
            FilesWrite.model_validate({"path": "x", "content": "", field: "agent-b"})
    with pytest.raises(ValidationError):
        FilesShare(path="x", grantee="bad name")


def test_content_is_base64_in_json() -> None:
    w = FilesWrite(path="x", content=b"\x00\xff")
    assert FilesWrite.model_validate_json(w.model_dump_json()).content == b"\x00\xff"
