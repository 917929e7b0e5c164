import pytest

from atelier.workspace.paths import InvalidPath, normalize_path, normalize_prefix

HOSTILE = [
    "",
    ".",
    "..",
    "../etc/passwd",
    "a/../../b",
    "a/./b",
    "./a",
    "a/..",
    "/etc/passwd",
    "//server/share",
    "a//b",
    "a/",
    "a\\b",
    "..\\..\\windows",
    "C:\\boot.ini",
    "a\x00b",
    "\x00",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x1bb",
    "a\x7fb",
    "a\u0085b",
    "a\u2028b",
    "x" * 256,
    "a/" + "y" * 256,
    ("abcdefgh/" * 120) + "z",
    "é" * 600,
    "/",
    "\\",
    "a/\x01/b",
    "\ud800",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("reports/q3.csv", "reports/q3.csv"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFC
        ("a b/c-d_e.f", "a b/c-d_e.f"),
        ("..hidden/.env", "..hidden/.env"),
        ("%2e%2e", "%2e%2e"),  # not decoded twice: a literal name
    ],
)
def test_valid_paths_are_normalised(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_prefixes_may_end_with_a_slash() -> None:
    assert normalize_prefix("") == ""
    assert normalize_prefix("reports/") == "reports/"
    with pytest.raises(InvalidPath):
        normalize_prefix("../")
