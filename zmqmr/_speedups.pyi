from collections.abc import Iterable, Iterator
from typing import Any

def count_outputs(
    index: dict[Any, int], counts: bytearray, outputs: Iterable[Any], value: Any, unset: object
) -> tuple[int, Any, Any, Any]: ...
def line_keys(path: str, pos: int, lines: list[Any]) -> Iterator[tuple[str, int]]: ...
