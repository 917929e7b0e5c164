import io

from hypothesis import given
from hypothesis import strategies as st

from atelier.workspace.s3 import ChunksReader


@given(
    chunks=st.lists(st.binary(max_size=50), max_size=20),
    reads=st.lists(st.tuples(st.integers(-1, 80), st.integers(0, 1200)), max_size=15),
)
def test_reads_like_the_joined_bytes(chunks: list[bytes], reads: list[tuple[int, int]]) -> None:
    reader, expected = ChunksReader(chunks), io.BytesIO(b"".join(chunks))
    assert len(reader) == len(expected.getvalue())
    for size, seek_to in reads:
        assert reader.seek(seek_to) == expected.seek(min(seek_to, len(expected.getvalue())))
        assert reader.read(size) == expected.read(size)
        assert reader.tell() == expected.tell()
    reader.seek(0)
    assert reader.read() == b"".join(chunks)
    assert reader.seek(-3, io.SEEK_END) == max(len(expected.getvalue()) - 3, 0)
