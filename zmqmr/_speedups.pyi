from collections.abc import Iterable
from typing import Any

def count_outputs(
    index: dict[Any, int], counts: bytearray, outputs: Iterable[Any], value: Any, unset: object
) -> tuple[int, Any, Any, Any]: ...
