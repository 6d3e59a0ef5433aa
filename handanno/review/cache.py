"""A small thread-safe least-recently-used cache bounded by the bytes it holds."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LRUCache:
    """Keeps the most recently used values whose sizes add up to at most ``max_bytes``.

    Args:
        max_bytes: the budget; a value larger than it is returned but not kept.

    Example:
        >>> c = LRUCache(max_bytes=10)
        >>> c.get_or_make("a", lambda: b"12345678", len)
        b'12345678'
        >>> _ = c.get_or_make("b", lambda: b"xyz", len)  # 8 + 3 > 10: "a" goes
        >>> c.keys()
        ['b']
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        """The value, or None; a hit makes it the most recently used."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Keep ``value`` (``size`` bytes), dropping the least recently used values over the budget."""
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def get_or_make(self, key: Hashable, make: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        """The cached value, or ``make()`` kept under ``key`` (two threads may both make it once; both agree)."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value, size(value))
        return value

    def keys(self) -> list:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)
