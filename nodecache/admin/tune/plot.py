"""The tune plot: hit ratio against cache size (log scale), one line per TTL policy, and
upstream queries per second below it, written as a PNG with matplotlib's Agg backend (no
display needed). matplotlib is imported here only, so the rest of nodecache runs without it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nodecache.admin.tune.replay import Result

MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", "-.", ":")


class PlotError(RuntimeError):
    """The plot cannot be made (matplotlib missing, or the file cannot be written)."""


def write_png(results: Sequence[Result], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib: pip install 'kdns[admin]' (or matplotlib)"
        ) from None
    policies = list(dict.fromkeys(result.policy_label for result in results))
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for index, label in enumerate(policies):
        rows = sorted((r for r in results if r.policy_label == label), key=lambda r: r.max_entries)
        sizes = [r.max_entries for r in rows]
        # Policies often coincide (a cap above every TTL in the log changes nothing): each
        # line gets its own dash and a smaller marker than the one before, so none hides.
        style = {
            "marker": MARKERS[index % len(MARKERS)],
            "linestyle": DASHES[index % len(DASHES)],
            "markersize": max(3, 10 - 2 * index),
            "label": label,
        }
        top.plot(sizes, [100 * r.hit_ratio for r in rows], **style)
        bottom.plot(sizes, [r.upstream_qps for r in rows], **style)
    top.set_xscale("log")
    top.set_ylabel("hit ratio (%)")
    top.set_title(title)
    top.grid(True, which="both", alpha=0.3)
    top.legend(title="TTL policy (floor:cap s)", loc="best")
    bottom.set_xlabel("cache size (cache.max_entries)")
    bottom.set_ylabel("upstream queries/s")
    bottom.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise PlotError(f"--plot: cannot write {path}: {error.strerror}") from None
    finally:
        plt.close(figure)
