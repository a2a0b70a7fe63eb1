"""The acceleration report (issue 13): the distilled student query encoder against its
teacher, from the files `fusionrank distil` and `fusionrank evaluate --student` wrote, so no
figure is typed by hand; and the GPU section's place.

    .venv/bin/fusionrank distil --run runs/relevance
    .venv/bin/fusionrank evaluate --run runs/relevance --student runs/relevance/student/best
    .venv/bin/python -m benchmarks.acceleration [--evaluation runs/relevance/evaluation]
                                                [--student runs/relevance/student]

Writes benchmarks/reports/acceleration.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness import REPORTS, command, machine, now, save_report

RUN = Path("runs/relevance")
PRECISIONS = ("fp32", "int8")
BATCHES = ("1", "8")  # JSON keys


def distillation_section(evaluation: dict, distil: dict) -> str:
    student = evaluation["student"]
    target = student["target"]
    seconds = distil["seconds"]
    best = distil["best_dev"]
    lines = [
        "## Distillation: a 3-layer student query encoder", "",
        f"- Teacher: `{distil['teacher']}` ({distil['teacher_layers']} layers, 384-d), the run "
        f"`{distil['run']}`; student: its layers {distil['kept_layers']} (embeddings and those "
        "layers copied), the same tokenizer and 384-d output.",
        "- Trained on the training split's queries only "
        f"({distil['train_queries']}): embedding matching (‖s − t‖²) + KL between the "
        "teacher's and the student's score distributions over each query's candidates (its "
        "judged products, the teacher's best dense and BM25 products; the catalogue's teacher "
        "embeddings, fixed). Dev picks the best checkpoint; test is never read.",
        "- The student encodes queries only; the catalogue, the index, the feedback head, its "
        "memory and the fusion weights stay the teacher's run's (`fusionrank build --student` "
        "serves exactly this).",
        f"- Command: `{distil['command']}`",
        f"- Training: {seconds['training']:.0f} s ({distil['steps']} steps, best at step "
        f"{distil['best_step']}; {seconds['preparation']:.0f} s of preparation before: the "
        f"teacher's query embeddings and the candidate pools), {distil['threads']} PyTorch "
        "threads, on a machine shared with other jobs"
        + (f" (CPU time {distil['cpu_seconds_training']:.0f} s; 1-minute load average "
           f"{distil['load_average_1min']['start']:.1f} at the start, "
           f"{distil['load_average_1min']['end']:.1f} at the end, on {distil['cpus']} CPUs)"
           if "cpu_seconds_training" in distil else "") + ".",
        f"- Dev during distillation (dense retrieval over the full catalogue): student NDCG@10 "
        f"{best['ndcg@10']:.4f}, Recall@100 {best['recall@100']:.4f} (cosine to the teacher "
        f"{best['cosine_to_teacher']:.4f}); teacher {distil['teacher_dev']['ndcg@10']:.4f}, "
        f"{distil['teacher_dev']['recall@100']:.4f}.", "",
        f"Evaluation command: `{evaluation.get('command') or 'fusionrank evaluate --student'}` "
        f"({evaluation['queries']['test']} test and {evaluation['queries']['dev']} dev queries, "
        f"{evaluation['catalogue_products']} products; the served path after the encoder).", "",
        "| query encoder | test NDCG@10 | test Recall@100 | dev NDCG@10 | dev Recall@100 "
        "| batch 1, ms | batch 8, ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    layers = {"teacher": distil["teacher_layers"], "student": len(distil["kept_layers"])}
    timed = student["latency"]["student fp32"]
    for who in ("teacher", "student"):
        for precision in PRECISIONS:
            name = f"{who} {precision}"
            test, dev = student["quality"]["test"][name], student["quality"]["dev"][name]
            latency = student["latency"][name]
            lines.append(f"| {who} ({layers[who]} layers), "
                         f"{precision.upper()} | {test['ndcg@10']:.4f} | {test['recall@100']:.4f} "
                         f"| {dev['ndcg@10']:.4f} | {dev['recall@100']:.4f} | "
                         + " | ".join(f"{latency[b]['median_ms']:.3f}" for b in BATCHES) + " |")
    lines += [
        "", "Query-encoding latency: the median ONNX Runtime CPU call (what `EncodeQueries` "
        f"runs, on batches tokenised beforehand) over the {student['latency_queries']} test "
        "queries (" + ", ".join(f"{timed[b]['batches']} batches of {b}" for b in BATCHES)
        + f"), {student['latency_threads']} threads; teacher and student take turns on the "
        "same batches.", "",
        "| speed-up (teacher ÷ student) | batch 1 | batch 8 |", "| --- | --- | --- |"]
    for precision in PRECISIONS:
        lines.append(f"| {precision.upper()} | "
                     + " | ".join(f"{student['speedup'][precision][b]:.2f}×" for b in BATCHES)
                     + " |")
    loss = student["test_ndcg10_loss"]
    lines += [
        "", f"**Target: ≥ {target['speedup']}× faster query encoding with fused test NDCG@10 "
        f"within {target['max_ndcg10_loss']} of the teacher — "
        f"{'met' if target['met'] else 'missed'}.** Lowest speed-up "
        f"{target['lowest_speedup']:.2f}×; test NDCG@10 lost: FP32 {loss['fp32']:+.4f}, "
        f"INT8 {loss['int8']:+.4f} (teacher minus student).", ""]
    return "\n".join(lines)


def gpu_section() -> str:
    """A placeholder until `scripts/gpu_check.sh` has written its report; then a pointer to it."""
    measured = (REPORTS / "gpu_check.json").is_file()
    return "\n".join([
        "## GPU", "",
        "The GPU figures (the encoder's FP32/FP16 throughput over a batch sweep, and the cosine "
        "of its GPU embeddings to the CPU ONNX ones) come from `scripts/gpu_check.sh`, run when "
        "a GPU machine is lent to the task, in "
        "[gpu_check.md](gpu_check.md)" + (" (measured)." if measured else ": *placeholder* — "
                                           "not measured yet, no GPU figure is reported here."),
        ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", type=Path, default=RUN / "evaluation",
                        help="folder of `fusionrank evaluate --student`'s evaluation.json")
    parser.add_argument("--student", type=Path, default=RUN / "student",
                        help="the `fusionrank distil` output folder (its distil.json)")
    args = parser.parse_args()
    evaluation = json.loads((args.evaluation / "evaluation.json").read_text())
    if not evaluation.get("student"):
        raise SystemExit(f"{args.evaluation}/evaluation.json has no student section: run "
                         "`fusionrank evaluate --student RUN/student/best` first")
    distil = json.loads((args.student / "distil.json").read_text())
    report = {"written_at": now(), "machine": machine(), "command": command(),
              "distillation": distil, "evaluation": {k: evaluation[k] for k in (
                  "command", "run", "queries", "catalogue_products", "student")},
              "gpu": {"report": "gpu_check.md",
                      "measured": (REPORTS / "gpu_check.json").is_file()}}
    text = "\n".join([
        "# Acceleration: a distilled query encoder (and the GPU)", "",
        f"Machine: {report['machine']} (no GPU; shared with other jobs, so compare figures "
        "within one run). Written by `python -m benchmarks.acceleration` from the files the "
        f"commands below wrote ({report['written_at']}).", "",
        distillation_section(evaluation, distil), gpu_section()])
    save_report("acceleration", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
