"""The garbage collector's settings for the long-running processes (worker, relay, API)."""

from __future__ import annotations

import gc

# Allocations (less deallocations) between two young collections; Python's default is 700. A batch keeps
# tens of thousands of objects alive until it commits, and each young collection walks them again as
# they age: in bench.core_bench the collector took a fifth of the CPU (docs/benchmarks.md, "Second
# wave, sixth pass"). The older generations keep their default ratios.
YOUNG_COLLECTION_THRESHOLD = 50_000


def settle() -> None:
    """Call once the process has loaded what it keeps for its lifetime.

    Freezing moves those objects out of the collector's reach, so no full collection walks the modules
    and clients again and again; the higher threshold makes young collections rare.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD)
