"""The multipart reader gives the same result however the body is split into chunks.

A real client's small upload reaches the server in one chunk; a large one in many, cut
anywhere. Both must read the same fields and the same file bytes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atelier.http.errors import ProblemError
from atelier.http.multipart import MultipartReader, disposition

BOUNDARY = "----AtelierBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass(frozen=True)
class Form:
    before: list[tuple[str, str]]  # fields sent before the file
    filename: str
    file: bytes
    after: list[tuple[str, str]]
    extended_name: bool  # filename*=UTF-8''… instead of a quoted filename

    def body(self) -> bytes:
        parts = [self._field(name, value) for name, value in self.before]
        if self.extended_name:
            quoted = urllib.parse.quote(self.filename, safe="")
            name = f"filename*=UTF-8''{quoted}"
        else:
            escaped = self.filename.replace("\\", "\\\\").replace('"', '\\"')
            name = f'filename="{escaped}"'
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; {name}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + self.file
            + b"\r\n"
        )
        parts += [self._field(name, value) for name, value in self.after]
        return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()

    @staticmethod
    def _field(name: str, value: str) -> bytes:
        return (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()


async def chunks_of(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(body)}):
        yield body[start:cut]
        start = cut
    yield body[start:]


async def read(body: bytes, cuts: list[int]) -> tuple[dict[str, str], str | None, bytes]:
    part = await MultipartReader(CONTENT_TYPE, chunks_of(body, cuts)).file()
    data = b"".join([chunk async for chunk in part.chunks])
    return part.fields, part.filename, data


field_names = st.sampled_from(["path", "note", "purpose", "x"])
field_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)
filenames = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    min_size=1,
    max_size=30,
)
forms = st.builds(
    Form,
    before=st.lists(st.tuples(field_names, field_values), max_size=3, unique_by=lambda f: f[0]),
    filename=filenames,
    # Bytes that look like a boundary or CRLF inside the file must come through as they are.
    file=st.one_of(
        st.binary(max_size=3000),
        st.just(f"\r\n--{BOUNDARY[:-1]}\r\n".encode() * 3),
        st.just(b""),
    ),
    after=st.lists(st.tuples(field_names, field_values), max_size=2),
    extended_name=st.booleans(),
)


class TestChunkingDoesNotMatter:
    @settings(max_examples=300, deadline=None)
    @given(form=forms, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
    async def test_any_split_reads_the_same_fields_and_bytes(self, form: Form, cuts) -> None:
        body = form.body()
        fields, filename, data = await read(body, cuts)
        assert fields == dict(form.before)
        assert filename == form.filename
        assert data == form.file

    @pytest.mark.parametrize("split", ["whole", "byte_by_byte"])
    async def test_a_small_upload_in_one_chunk_and_byte_by_byte(self, split: str) -> None:
        form = Form([("path", "notes/ü.txt")], 'naïve "quoted".txt', b"tiny\n", [], False)
        body = form.body()
        cuts = [] if split == "whole" else list(range(1, len(body)))
        assert await read(body, cuts) == ({"path": "notes/ü.txt"}, 'naïve "quoted".txt', b"tiny\n")

    async def test_file_part_first_and_extended_filename(self) -> None:
        form = Form([], "報告 2026.csv", b"a,b\n1,2\n", [("path", "ignored-after")], True)
        assert await read(form.body(), []) == ({}, "報告 2026.csv", b"a,b\n1,2\n")


class TestDisposition:
    def test_extended_filename_wins_and_semicolons_inside_quotes_survive(self) -> None:
        value = b'form-data; name="file"; filename="a;b.txt"; filename*=UTF-8\'\'%E2%82%AC.txt'
        assert disposition(value) == {"name": "file", "filename": "€.txt"}
        assert disposition(b'form-data; name="f"; filename="a;b.txt"')["filename"] == "a;b.txt"


class TestBadBodies:
    async def test_a_body_cut_inside_the_file_is_refused(self) -> None:
        body = Form([], "f.bin", b"x" * 100, [], False).body()[:-60]
        reader = MultipartReader(CONTENT_TYPE, chunks_of(body, []))
        part = await reader.file()
        with pytest.raises(ProblemError) as error:
            async for _ in part.chunks:
                pass
        assert error.value.code == "invalid_multipart"

    async def test_huge_part_headers_are_refused(self) -> None:
        body = (
            f"--{BOUNDARY}\r\nX-Junk: {'j' * 10_000}\r\n"
            'Content-Disposition: form-data; name="file"\r\n\r\nx\r\n'
            f"--{BOUNDARY}--\r\n"
        ).encode()
        with pytest.raises(ProblemError) as error:
            await MultipartReader(CONTENT_TYPE, chunks_of(body, [])).file()
        assert error.value.code == "invalid_multipart"
