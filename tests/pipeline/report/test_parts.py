"""The report's section on captions scored in parts: the least supported sentences (against the rest of their
own caption) and the spread of chunk scores by caption length; seen in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.report import parts
from pipeline.report.job import run
from pipeline.report.shown import shown_row
from tests.support.browser import save_screenshot, visit
from tests.support.scored import write_jsonl
from transforms import ImageSettings, OutputFields, RecordFields
from transforms.testing.images import write_good_images

OUTPUTS = OutputFields(long_captions="chunks", sentence_scores=True)


def _row(sentences: list[tuple[str, float]], chunk_scores: list[float], image: str = "rgb.png") -> dict:
    """A scored row whose caption is `sentences` joined by spaces, each with its score; chunks cut the caption in
    len(chunk_scores) equal runs of sentences."""
    text, spans, start = "", [], 0
    for sentence, score in sentences:
        text += ("" if not text else " ") + sentence
        start = len(text) - len(sentence)
        spans.append({"start": start, "end": len(text), "score": score})
    per = -(-len(spans) // len(chunk_scores))
    chunks = [
        {"start": spans[i * per]["start"], "end": spans[min((i + 1) * per, len(spans)) - 1]["end"], "score": score}
        for i, score in enumerate(chunk_scores)
    ]
    return {
        "image_path": image,
        "text": text,
        "longclip_score": float(np.mean(chunk_scores)),
        "longclip_score_reason": None,
        "longclip_score_truncated": False,
        "longclip_score_min": min(chunk_scores),
        "longclip_score_chunks": chunks,
        "longclip_score_sentences": spans,
    }


def _facts(row: dict):
    shown = shown_row(row["longclip_score"], row, RecordFields(), ImageSettings())
    return parts.part_facts(row, OUTPUTS, row["text"], 900, shown)


def test_the_least_supported_sentence_is_the_lowest_against_the_rest_of_its_own_caption():
    row = _row([("A red house.", 0.62), ("A green lawn.", 0.60), ("A purple elephant flies.", 0.41)], [0.6, 0.5])
    facts = _facts(row)
    assert facts.tokens == 900 and facts.spread == pytest.approx(0.1)
    least = facts.least
    assert least.sentence == "A purple elephant flies." and least.score == 0.41
    assert least.rest == pytest.approx(0.61) and least.gap == pytest.approx(0.41 - 0.61)
    assert least.before.endswith("A green lawn. ") and least.after == ""
    # Chunks stand in for sentences where no sentence scores were kept; one chunk has no spread.
    row["longclip_score_sentences"] = None
    row["longclip_score_chunks"] = row["longclip_score_chunks"][:1]
    assert _facts(row) == parts.PartFacts(900, None, None)


@pytest.mark.parametrize(
    "spans",
    [
        "not a list",
        [{"start": 0, "end": 10**6, "score": 0.5}],  # past the caption
        [{"start": 5, "end": 2, "score": 0.5}],
        [{"start": 0, "end": 4, "score": "high"}],
        [{"start": 0, "end": 4, "score": 1e308}],
        [{"start": True, "end": 4, "score": 0.5}],
        [["0", "4", "0.5"]],
        [],
    ],
)
def test_spans_that_are_not_spans_of_the_caption_are_left_out(spans):
    row = _row([("A red house.", 0.62), ("A green lawn.", 0.60)], [0.6])
    row["longclip_score_chunks"] = row["longclip_score_sentences"] = spans
    assert _facts(row) is None


def _corpus(images) -> list[dict]:
    rng = np.random.default_rng(3)
    rows = []
    for n in range(40):
        count = int(rng.integers(2, 12))
        sentences = [(f"Sentence {i} of caption {n} says something about the scene.", 0.55) for i in range(count)]
        sentences[int(rng.integers(0, count))] = (f"Caption {n} has one sentence the image does not show.", 0.3)
        sentences = [(text, score + float(rng.normal(0, 0.01))) for text, score in sentences]
        row = _row(sentences, list(rng.uniform(0.4, 0.7, size=max(1, count // 3))), image=images[n % len(images)])
        rows.append({"id": n, **row})
    rows.append({"id": 99, "image_path": "rgb.png", "text": "a cat", "longclip_score": 0.6,
                 "longclip_score_reason": None, "longclip_score_truncated": False})  # fmt: skip
    return rows


@pytest.mark.browser
@pytest.mark.slow
def test_the_section_shows_the_sentences_highlighted_in_their_captions_and_the_spread_chart(tmp_path):
    images = write_good_images(tmp_path / "images")
    rows = _corpus([str(images[name]) for name in ("rgb.png", "rgb.jpg", "grey.png")])
    write_jsonl(tmp_path / "scored" / "scored-00000-of-00001.jsonl", rows)
    summary = run(["--input", str(tmp_path / "scored" / "*.jsonl"), "--output", str(tmp_path / "report")])
    assert summary["scored"] == 41
    data = json.loads((tmp_path / "report" / "report_data.json").read_text())
    assert data["parts"]["rows"] == 40 and len(data["parts"]["least_supported"]) == 12
    shown = data["parts"]["least_supported"]
    assert all("does not show" in item["sentence"] for item in shown), "each caption's planted sentence"
    assert [item["gap"] for item in shown] == sorted(item["gap"] for item in shown)
    spread = np.asarray(data["parts"]["spread_by_length"])
    assert spread.sum() == sum(1 for row in rows if len(row.get("longclip_score_chunks") or []) > 1)

    check = """(() => ({
      least: document.querySelectorAll('#least-supported .row').length,
      marks: [...document.querySelectorAll('#least-supported mark')].map(m => m.textContent),
      thumbnails: document.querySelectorAll('#least-supported .thumb img').length,
      spread: [...document.querySelectorAll('img[data-chart="chunk_spread_by_length.png"]')]
        .map(img => img.complete && img.naturalWidth > 400),
      markInView: [...document.querySelectorAll('#least-supported .row p:not(.where)')].every(p => {
        const m = p.querySelector('mark'); return m && m.offsetTop - p.offsetTop < p.clientHeight; }),
    }))()"""
    seen = visit((tmp_path / "report" / "report.html").resolve().as_uri(), check)
    save_screenshot(seen, tmp_path / "parts.png")
    assert seen.console_errors == []
    assert seen.checks["least"] == 12 and seen.checks["thumbnails"] == 12 and seen.checks["spread"] == [True]
    assert all("does not show" in mark for mark in seen.checks["marks"]) and seen.checks["markInView"]


def test_a_report_without_parts_has_no_such_section(scored_report):
    _, folder, _ = scored_report
    assert 'id="least-supported"' not in (folder / "report.html").read_text()
    assert not (folder / "chunk_spread_by_length.png").exists()
