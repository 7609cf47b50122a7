"""Command-line argument types shared by the example scripts."""
from __future__ import annotations

import argparse

__all__ = ["int_at_least", "BATCH_SIZE"]


def int_at_least(low: int, why: str = ""):
    """An argparse ``type``: an integer ``>= low``; a smaller one is a usage error that gives
    ``why``."""
    def parse(text: str) -> int:
        value = int(text)  # a ValueError: argparse says "invalid int value"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{why}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


#: The training loops skip batches of fewer than 2 samples, so a batch size of 1 would train
#: nothing and every method would report its untrained accuracy.
BATCH_SIZE = int_at_least(2, " (the training loops skip batches of one sample, so 1 would train nothing)")
