"""Markdown tables for BENCHMARKS.md (figures by column, and targets as ratios: ≥ the need is met), and the lines
that read them; no client library imported (tests import this beside kserve)."""


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"

    def cell(r: dict, k: str, f: str) -> str:
        return "–" if r.get(k) is None else format(r[k], f)

    return head + "\n".join("| " + " | ".join(cell(r, k, f) for k, _, f in cols) + " |" for r in rows)


def targets_table(targets: list[tuple[str, float, float]]) -> str:
    head = "| target | measured | needed | met |\n|---|---:|---:|:-:|\n"
    return head + "\n".join(f"| {t} | {v:.2f} | {n:g} | {'yes' if v >= n else '**no**'} |" for t, v, n in targets)


def roof_line(inproc: dict) -> str:
    """What ResNet-50 fp32 computes per second in each engine, against the machine's fp32 matrix-product rate."""
    rows = {(r["engine"], r["batch"]): r for r in inproc["rows"] if r["model"] == "resnet50"}
    gflops = {k: inproc["resnet50_flops"] * r["images_per_s"] / 1e9 for k, r in rows.items()}
    return (
        f"ResNet-50 is {inproc['resnet50_flops'] / 1e9:.1f} GFLOP per 224² image (torch's counter). At batch 8,"
        f" onnxruntime fp32 computes {gflops[('onnxruntime fp32', 8)]:.0f} GFLOPS and eager torch"
        f" {gflops[('torch', 8)]:.0f}, against {inproc['sgemm_gflops']:.0f} GFLOPS for a 2048² fp32 matrix product in"
        " onnxruntime on the same threads: the roof the fp32 convolutions work under, and so the most any fp32"
        " engine can gain over torch here."
    )
