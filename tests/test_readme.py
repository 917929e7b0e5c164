from pathlib import Path

from atelier.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_documents_every_setting() -> None:
    missing = [
        f"ATELIER_{name.upper()}"
        for name in Settings.model_fields
        if f"`ATELIER_{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_gives_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
