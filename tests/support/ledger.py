"""What became of every request after a fault: each one ended (DONE with its output and metrics, or FAILED with its
reason), none lost, none stuck RUNNING, none written twice; and the record of what each fault case survived, which
the faults tier writes to bench-results/faults.json and docs/reliability.md shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.local_aws import Table


@dataclass
class Settled:
    """The requests' items, read back after recovery."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def settle(table: Table, ids: list[str]) -> Settled:
    """Each id's item checked: ended, whole, not held; a missing or unfinished item is lost."""
    items = {item["id"]: item for item in table.items()}
    settled = Settled()
    for item_id in ids:
        item = items.get(item_id)
        if item is None or item["status"] not in ("DONE", "FAILED"):
            settled.lost.append(item_id)
            continue
        if "lease_owner" in item or "lease_until" in item:
            settled.problems.append(f"{item_id[:12]} ended but still holds a lease")
        if item["status"] == "DONE":
            settled.done.append(item_id)
            if not isinstance(item.get("output"), str) or not item.get("metrics"):
                settled.problems.append(f"{item_id[:12]} is DONE without its output or metrics")
        else:
            settled.failed.append(item_id)
            if not item.get("error"):
                settled.problems.append(f"{item_id[:12]} is FAILED without its reason")
    return settled


def expired(table: Table, item_id: str) -> bool:
    """Whether an item's lease (if it has one) has run out."""
    item = next((item for item in table.items() if item["id"] == item_id), None)
    until = item.get("lease_until") if item else None
    return until is None or datetime.fromisoformat(str(until)) < datetime.now(UTC)


@dataclass
class Survival:
    """One fault case: the fault, where it was injected, how often, and what came of the requests it hit."""

    fault: str
    where: str
    injected: int
    requests: int
    done: int
    failed: int
    lost: int
    duplicates: int
    recovery: str

    @property
    def survived(self) -> bool:
        return self.lost == 0 and self.duplicates == 0


@dataclass
class Ledger:
    """Every fault case of a run, written as JSON for the docs' table."""

    cases: list[Survival] = field(default_factory=list)

    def record(
        self,
        fault: str,
        where: str,
        injected: int,
        settled: Settled,
        written: dict[str, int],
        recovery: str,
    ) -> Survival:
        """``written``: how often each request's result was written (the fault proxy's count of completions that
        took effect); any beyond one per request is a duplicate."""
        case = Survival(
            fault=fault,
            where=where,
            injected=injected,
            requests=len(settled.done) + len(settled.failed) + len(settled.lost),
            done=len(settled.done),
            failed=len(settled.failed),
            lost=len(settled.lost),
            duplicates=sum(count - 1 for count in written.values()),
            recovery=recovery,
        )
        self.cases.append(case)
        return case

    def write(self, path: Path) -> None:
        """The cases as JSON at ``path``, and as the docs' Markdown table beside it (``.md``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        cases: list[dict[str, Any]] = [{**asdict(case), "survived": case.survived} for case in self.cases]
        path.write_text(json.dumps({"cases": cases}, indent=1) + "\n", encoding="utf-8")
        path.with_suffix(".md").write_text(self.markdown(), encoding="utf-8")

    def markdown(self) -> str:
        """One row per case, in the order the cases ran (docs/reliability.md)."""
        rows = [
            "| fault | where injected | injected | requests | survived | done | failed | lost | duplicates "
            "| recovery |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for case in self.cases:
            survived = "yes" if case.survived else "**no**"
            rows.append(
                f"| {case.fault} | {case.where} | {case.injected} | {case.requests} | {survived} | {case.done} | "
                f"{case.failed} | {case.lost} | {case.duplicates} | {case.recovery} |"
            )
        return "\n".join(rows) + "\n"
