"""Talking to the person at the bench: every line on stderr, so stdout stays the JSON report.

    lab: scenario 2/7 out_of_range: a strap walked out of range and back
    lab >>> walk strap 1 (AA:BB:...) out of range now: another room, or 20 m away (waiting up to 90 s)
    lab [sim] strap 1 walks out of range

On real hardware a physical step is a prompt; the kit then watches for its effect (the link drops, the
port vanishes) instead of asking the human to confirm it. Before a scenario that needs the human's
hands, an interactive run (stdin a terminal, no --yes) waits for Enter; with --yes, or stdin not a
terminal, it goes straight on. On the simulator the kit does the step itself and says so.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO


class Guide:
    def __init__(self, out: TextIO | None = None, *, interactive: bool = False, stdin: TextIO | None = None):
        self.out = out if out is not None else sys.stderr
        self.stdin = stdin if stdin is not None else sys.stdin
        self.interactive = interactive

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        self._line(f"lab: {text}")

    def sim(self, text: str) -> None:
        """What the simulator does in place of the human."""
        self._line(f"lab [sim] {text}")

    def prompt(self, text: str, wait_s: float) -> None:
        """A physical step for the human; the kit waits up to `wait_s` for its effect."""
        self._line(f"lab >>> {text} (waiting up to {wait_s:g} s)…")

    async def ready(self, text: str) -> None:
        """Set-up before a step: wait for Enter in an interactive run, else just say it."""
        if not self.interactive:
            self.say(text)
            return
        self._line(f"lab >>> {text}: press Enter when ready")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd = self.stdin.fileno()

        def on_input() -> None:
            self.stdin.readline()  # a whole line is there (a terminal in canonical mode), or EOF
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_input)
        try:
            await done
        finally:
            loop.remove_reader(fd)
