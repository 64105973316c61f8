"""Batches of similar length: inputs are read ahead, sorted by length and cut into batches, so padding
wastes little of the encoder's work."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class LengthBatcher(Generic[Item]):
    """Collects items; once ``read_ahead`` wait, hands them back sorted by ``length`` in batches of at most
    ``batch_size``. ``flush`` hands back whatever waits (call it after the last item)."""

    def __init__(self, batch_size: int, length: Callable[[Item], int], read_ahead: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.length = batch_size, length
        self.read_ahead = read_ahead or (1 if batch_size == 1 else 8 * batch_size)
        self.waiting: list[Item] = []

    def add(self, item: Item) -> list[list[Item]]:
        """Add ``item``; returns the batches that are now ready (none until ``read_ahead`` items wait)."""
        self.waiting.append(item)
        return self.flush() if len(self.waiting) >= self.read_ahead else []

    def flush(self) -> list[list[Item]]:
        waiting, self.waiting = sorted(self.waiting, key=self.length), []
        return [waiting[i : i + self.batch_size] for i in range(0, len(waiting), self.batch_size)]
