"""The end of an ingest: delete what is known to be gone (in chunks), then maybe build the index."""

from __future__ import annotations

from collections.abc import Callable

from ingest.bookkeeping import Bookkeeper
from ingest.plan import IngestPlan
from ingest.records import is_below
from ingest.report import IngestReport
from retrieval.store import VectorStore

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is "read" (files), "delete" (points) or "index" (points)."""


def _tag_roots(plan: IngestPlan, store: VectorStore) -> None:
    """Give points without a ``root`` field theirs: points stored before roots were recorded, and
    files ingested one by one (a file given as a root belongs to the stored root it lies below)."""
    online = [r for r in plan.roots if not r.offline]
    for root in online:
        if not root.is_file:
            store.set_root(root.path)
    files = [r for r in online if r.is_file]
    if files:
        stored = sorted(store.root_counts(), key=len, reverse=True)
        for root in files:
            owner = next((s for s in stored if s != root.path and is_below(root.path, s)), None)
            if owner:
                store.set_root(owner)


def start_report(plan: IngestPlan) -> IngestReport:
    """The report before any file is read: unchanged files, scan problems, offline roots, kept folders."""
    report = IngestReport(unchanged=plan.unchanged)
    report.failed = [{"path": p.path, "error": p.error} for p in plan.problems]
    report.offline = [{"path": r.path, "points": r.points, "reason": r.offline}
                      for r in plan.roots if r.offline and r.points]
    reasons = {p.path: p.error for p in plan.problems}
    report.kept = [{"path": path, "points": n, "reason": reasons.get(path, "unreadable")}
                   for path, n in sorted(plan.kept.items())]
    return report


def finish(plan: IngestPlan, book: Bookkeeper, store: VectorStore, report: IngestReport, *, prune: bool,
           max_delete_fraction: float, chunk: int, index_threshold: int,
           progress: Progress | None = None) -> IngestReport:
    """Delete stale points (after every upsert), hold back mass deletions, tag roots, build the index.

    A stale point whose content is still on disk (a moved file, a copy) is always deleted: nothing is
    lost. The rest count as lost; if they exceed ``max_delete_fraction`` of a root's points and
    ``prune`` is off, none of them is deleted and the root is reported in ``held_back``.
    """
    doomed: list[str] = []
    broken = set(book.broken)
    for root in plan.roots:
        if root.offline:
            continue
        lost = [key for key, digest in root.stale if digest not in plan.present]
        lost += [key for key in broken if plan.root_of(key) is root]
        moved_away = [key for key, digest in root.stale if digest in plan.present]
        doomed += moved_away
        if lost and not prune and len(lost) > max_delete_fraction * root.points:
            report.held_back.append({"path": root.path, "points": root.points, "would_delete": len(lost)})
        else:
            doomed += lost
    ids = [pid for key in doomed for pid in plan.ids_of(key)] + plan.superseded  # a video's key: its moments
    for start in range(0, len(ids), chunk):
        store.delete(ids[start:start + chunk])
        if progress:
            progress("delete", min(start + chunk, len(ids)), len(ids))
    report.deleted = len(doomed)
    _tag_roots(plan, store)
    unindexed = store.unindexed()
    if unindexed and unindexed >= index_threshold:
        if progress:
            progress("index", 0, unindexed)
        store.optimize()
        report.index_built = store.unindexed() < unindexed
        if progress:
            progress("index", unindexed, unindexed)
    return report
