"""Tables and progress bars, on the ground floor: the one place text and markdown tables are laid out, the one
reader of a results file's headline numbers (`evaluation/.../results.json`), and the one switch for progress bars.
The registry, the report, the study and the evaluation verbs all print through it; none of them lays out a table
of its own."""

from __future__ import annotations

import os
import sys

QUIET_ENV_VAR = "CONCEPT_ENCODER_QUIET"  # set (the verbs' --quiet does): no progress bars at all
# Stages whose metrics are benchmark scores: stored as fractions (what the gates' bounds read), shown x 100 as in
# every results table
SCORE_STAGES = ("finetune", "zero_shot", "baseline", "mteb")


def progress_bars() -> bool | None:
    """tqdm's `disable` for the package's progress bars: None (a bar when stderr is a terminal, none in logs, CI or
    tests), or True when CONCEPT_ENCODER_QUIET is set."""
    return True if os.environ.get(QUIET_ENV_VAR, "") not in ("", "0") else None


def bars_shown() -> bool:
    """Whether a bar drawn by another library (the Trainer's, sentence-transformers') should show: as ours do, on
    a terminal and unless quiet."""
    return progress_bars() is None and sys.stderr.isatty()


def progress(iterable, desc: str, total: int | None = None, unit: str = "batch"):
    """`iterable` with a progress bar on stderr (see `progress_bars`); the bar is cleared when it ends."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=progress_bars())


def markdown_table(header: list[str], rows: list[list[str]], numeric_from: int | None = None) -> str:
    """A markdown table; columns from `numeric_from` on are right-aligned (None: every column left)."""
    first_numeric = len(header) if numeric_from is None else numeric_from
    rule = ["---" if i < first_numeric else "--:" for i in range(len(header))]

    def line(cells) -> str:  # a | inside a cell ("mean |cos|") would end the cell: escape it
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "|".join(rule) + "|", *map(line, rows)])


def text_table(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    """Columns padded to width; columns from `numeric_from` on are right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def headline_rows(results: dict):
    """(task, split, metric, model summary, baseline name, baseline, TF-IDF + linear) per reported split of a
    results file: the task's headline metric on its own split, then on each extra split (held-out, mismatched)."""
    for name, result in results["tasks"].items():
        metric = result["headline_metric"]
        base_name = "tfidf_cosine" if "tfidf_cosine" in result["baselines"] else "majority"
        extra = [k.removesuffix(f"_{metric}") for k in result["summary"] if k.endswith(f"_{metric}")]
        for split, prefix in ((result.get("split", "validation"), ""), *((e, f"{e}_") for e in extra)):
            yield (name, split, metric, result["summary"][prefix + metric], base_name,
                   result["baselines"][base_name].get(prefix + metric),
                   result["baselines"].get("tfidf_linear", {}).get(prefix + metric))


def format_results(results: dict, markdown: bool = False) -> str:
    """The headline metric of each task, x 100, beside its baselines (plain text, or a markdown table)."""
    if markdown:
        rows = []
        for name, split, metric, model, base_name, base, linear in headline_rows(results):
            rows.append([name, split, metric, f"{100 * model['mean']:.2f} ± {100 * model['std']:.2f}",
                         "–" if base is None else f"{100 * base:.2f} ({base_name})",
                         "–" if linear is None else f"{100 * linear:.2f}"])
        table = markdown_table(["task", "split", "metric", "model (mean ± std)", "baseline", "TF-IDF + linear"], rows)
        return f"Model: `{results['model']}` ({results.get('mode', 'finetune')})\n\n{table}"
    lines = [f"{'task':<9}{'split':<12}{'metric':<10}{'model (mean ± std)':>22}{'baseline':>12}  baseline name"]
    for name, split, metric, model, base_name, base, _ in headline_rows(results):
        base_text = "–" if base is None else f"{100 * base:.2f}"
        lines.append(f"{name:<9}{split:<12}{metric:<10}{100 * model['mean']:>14.2f} ± {100 * model['std']:<5.2f}"
                     f"{base_text:>12}  {base_name}")
    return "\n".join(lines)


def mteb_rows(summary: dict) -> list[list[str]]:
    """(task, split, main score name, main score x 100) per task of an MTEB results file."""
    return [[name, r["split"], r["main_score_name"], f"{100 * r['main_score']:.2f}"] for name, r in summary["tasks"].items()]


def with_section(text: str | None, name: str, body: str, title: str = "# Results") -> str:
    """`text` (a markdown file's, or None for a new one) with `body` between the markers `<!-- NAME -->` and
    `<!-- /NAME -->`, appended when they are not there yet; the rest is kept."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    text = text if text is not None else f"{title}\n"
    if start in text and end in text[text.index(start):]:
        begin = text.index(start)
        return text[:begin] + section + text[text.index(end, begin) + len(end):]
    return text.rstrip() + "\n\n" + section + "\n"
