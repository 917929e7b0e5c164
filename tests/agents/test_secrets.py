"""The sealer's keys: the development key made on first use is one key however many
processes start together, and what one seals the others open."""

from __future__ import annotations

import threading
from pathlib import Path

from atelier.agents.secrets import Sealer
from atelier.settings import Settings


def test_processes_starting_together_agree_on_one_development_key(tmp_path: Path) -> None:
    # Many rounds of starters released at once: a key file visible before its key was
    # written once gave some of them an empty key, and their server failed to start.
    for round_ in range(100):
        settings = Settings(data_dir=tmp_path / str(round_))
        sealers = started_together(settings, 4)
        assert len(sealers) == 4
        sealed = sealers[0].seal_text("token")
        assert all(sealer.open_text(sealed) == "token" for sealer in sealers)
        key_file = settings.secrets_key_file
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in key_file.parent.iterdir()] == [key_file.name]


def test_a_restarted_process_opens_what_the_last_one_sealed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sealed = Sealer.for_settings(settings).seal({"mcp": {"Authorization": "Bearer x"}})
    assert Sealer.for_settings(settings).open(sealed) == {"mcp": {"Authorization": "Bearer x"}}


def started_together(settings: Settings, count: int) -> list[Sealer]:
    start = threading.Barrier(count)
    sealers: list[Sealer] = []

    def starter() -> None:
        start.wait()
        sealers.append(Sealer.for_settings(settings))

    threads = [threading.Thread(target=starter) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sealers
