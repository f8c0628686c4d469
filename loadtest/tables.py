"""Markdown tables for BENCHMARKS.md: figures by column, and targets as ratios (≥ the need is met)."""


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"

    def cell(r: dict, k: str, f: str) -> str:
        return "–" if r.get(k) is None else format(r[k], f)

    return head + "\n".join("| " + " | ".join(cell(r, k, f) for k, _, f in cols) + " |" for r in rows)


def targets_table(targets: list[tuple[str, float, float]]) -> str:
    head = "| target | measured | needed | met |\n|---|---:|---:|:-:|\n"
    return head + "\n".join(f"| {t} | {v:.2f} | {n:g} | {'yes' if v >= n else '**no**'} |" for t, v, n in targets)
