from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

def count_outputs(
    index: dict[Any, int], counts: bytearray, outputs: Iterable[Any], value: Any, unset: object
) -> tuple[int, Any, Any, Any]: ...
def line_keys(path: str, pos: int, lines: list[Any]) -> Iterator[tuple[str, int]]: ...
def verify_segments(datas: Sequence[Any]) -> int: ...
def merge_segments(
    datas: Sequence[Any],
    groups: dict[Any, list[Any]],
    loads: Callable[[Any], Any],
    decode_parts: Callable[[int, Any], Iterable[Any]],
    merge_part: Callable[[Any, dict[Any, list[Any]]], None],
    error: type[Exception],
) -> None: ...
def serve_held(
    out: list[Any],
    wanted: list[Any],
    i: int,
    opened: dict[str, Any],
    at: int,
    max_bytes: int,
    budget: int,
    gens: dict[str, int],
) -> tuple[int, int]: ...
