"""What a run prints: its epoch lines and a sweep's table (process 0, when the console is on).

Kept apart from the loop so that the loop has one path for any number of members: one
member's epoch line is the detailed one, several members share a line of their scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(x: Any, digits: int = 4) -> str:
  """A metric for a table: ``-`` when there is none."""
  return "-" if x is None else f"{x:.{digits}f}"


def epoch_line(record: dict[str, Any]) -> str:
  """One member's epoch: its losses, accuracies, ESS and time."""
  acc = record.get("test_acc")
  return (
    f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  weighted "
    f"{record['weighted_loss']:.4f}  train acc {record['train_acc']:.3f}  test acc "
    f"{fmt(acc, 3)}  ESS {record['ess_mean']:.1f}  {record['epoch_time_s']:.1f}s"
  )


def epoch_lines(
  epoch: int,
  train_s: float,
  labels: Sequence[str],
  histories: Sequence[Sequence[dict[str, Any]]],
  selected_on: str,
) -> str:
  """The epoch's line: one member's detailed line, or each member's score on one line."""
  if len(labels) == 1:
    return epoch_line(histories[0][-1]) if histories[0] else f"epoch {epoch}: diverged"
  scores = "  ".join(
    f"{label} {fmt(h[-1].get(selected_on)) if h else '-'}" for label, h in zip(labels, histories)
  )
  return f"epoch {epoch} ({train_s:.1f}s, {len(labels)} members): {scores}"


def sweep_table(summary: dict[str, Any]) -> str:
  """A sweep's members as a text table, the winner starred, with what it was chosen on."""
  key = summary["selected_on"]
  head = f"{'member':<24} {key:>18} {'test_acc':>9} {'test_bal':>9} {'loss':>8}  status"
  lines = [head]
  for r in summary["members"]:
    f = r["final"]
    lines.append(
      f"{('* ' if r['winner'] else '  ') + r['label']:<24} {fmt(r['score']):>18} "
      f"{fmt(f.get('test_acc')):>9} {fmt(f.get('test_balanced_acc')):>9} "
      f"{fmt(f.get('train_loss')):>8}  {r['status']}"
    )
  if summary["winner"] is None:
    lines.append("no healthy member: no winner.")
  else:
    note = (
      ""
      if key.startswith("val")
      else " (no validation split: chosen on the test split; set val_fraction > 0 to keep "
      "the test split for reporting)"
    )
    lines.append(f"winner: {summary['winner']}, by final {key}{note}")
  return "\n".join(lines)
