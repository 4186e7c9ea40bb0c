"""Teacher targets: building the cache (the teacher's one pass) and reading it back, per student window.

    python benchmarks/teacher_cache.py [--texts 256]

Real text: WikiText valid articles packed into windows of N MiniLM tokens (the student's blocks), decoded, then
given to `data.teacher_targets.teacher_targets` with all-MiniLM-L6-v2 (chunks of 256 teacher tokens, so a
window of N tokens costs about N/256 teacher passes). "build" is a cold cache (the teacher loads and runs);
"read" is the same call again (manifest, checksum, safetensors read). Fewer texts at long windows, the same
number of tokens per row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown_table, write_section

from concept_encoder.data import resolve_data_dir
from concept_encoder.data.corpus import load_documents
from concept_encoder.data.teacher_targets import DEFAULT_TEACHER, Teacher, teacher_targets
from concept_encoder.inference.encoder import model_tokenizer, teacher_vectors

WINDOWS = (128, 512, 2048, 8192)


def windows(tokenizer, documents: list[str], size: int, count: int) -> list[str]:
    ids = [i for text in documents for i in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]
    if len(ids) < size * count:
        sys.exit(f"the corpus has {len(ids)} tokens, fewer than {count} windows of {size}")
    return tokenizer.batch_decode([ids[i * size : (i + 1) * size] for i in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256, help="windows at N=128; N=512 gets a quarter, and so on")
    args = parser.parse_args()
    teacher = Teacher.resolve(DEFAULT_TEACHER)
    tokenizer = model_tokenizer(teacher.folder)
    documents = load_documents(["wikitext/wiki.valid.raw.gz"], resolve_data_dir())
    rows = []
    for size in WINDOWS:
        count = max(4, args.texts * WINDOWS[0] // size)
        texts = windows(tokenizer, documents, size, count)
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            _, status = teacher_targets(teacher, texts, Path(cache), teacher_vectors)
            build = time.perf_counter() - start
            start = time.perf_counter()
            _, again = teacher_targets(teacher, texts, Path(cache), teacher_vectors)
            read = time.perf_counter() - start
        assert (status, again) == ("built", "read"), (status, again)
        rows.append([f"{size:,}", count, f"{build:.1f}", f"{count / build:,.1f}", f"{count * size / build:,.0f}",
                     f"{read * 1000:.0f}", f"{build / read:,.0f}×"])
    body = (f"Teacher {DEFAULT_TEACHER} (chunks of 256 tokens), WikiText valid windows. Command: "
            f"`python benchmarks/teacher_cache.py --texts {args.texts}`.\n\n"
            + markdown_table(["window N", "texts", "build s", "texts/s", "tokens/s", "read ms", "build / read"],
                             rows))
    write_section("teacher_cache", "Teacher cache: build and read", body)


if __name__ == "__main__":
    main()
