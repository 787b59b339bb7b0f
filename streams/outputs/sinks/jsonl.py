"""Append alerts to a JSONL file (flushed per alert, so ``tail -f`` shows them as they fire)."""

from __future__ import annotations

from pathlib import Path

from streams.core.alerts import Alert


class JsonlSink:
    name = "jsonl"
    pages = False

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def deliver(self, alert: Alert) -> None:
        self._fh.write(alert.to_json() + "\n")
        self._fh.flush()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._fh.close()
