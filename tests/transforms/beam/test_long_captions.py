"""Captions past the context in chunks, and sentence scores: every part scored exactly as a caption is.

The reference is the independent LongCLIP forward pass (tests/support/reference_longclip.py): for every chunk
and every sentence of every good record, the original evaluator's score of (image, caption[start:end]) must
equal the reported score within 1e-6.
"""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from tests.support import reference_longclip as reference
from transforms import BatchSettings, ModelSettings, RecordFields, ScoreLongCLIP
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.testing.sentence_cases import CASES, STREET, long_caption

IMAGES = ("rgb.jpg", "rgb.png", "grey.png", "large_1800x1200.jpg")


def long_caption_corpus() -> list[str]:
    """Captions from 5 to about 1,500 tokens: short ones, just under and just over the context, dense
    paragraphs, text without spaces, a word longer than the context, many sentences."""
    return [
        "a cat on a mat",
        STREET.text,
        long_caption(10, seed=3),  # about 220 tokens: fits
        long_caption(12, seed=4),  # about 260 tokens: just over
        long_caption(27, seed=5),  # about 600 tokens
        long_caption(66, seed=6),  # about 1,500 tokens
        "公園のベンチに女性が座っています。" * 40,  # no spaces, past the context
        "See " + "x" * 2000 + " here. Then a dog runs.",  # a word past the context
        " ".join(case.text for case in CASES[:20]),  # every kind of sentence edge
        "no punctuation at all " * 80,
    ]


def _run(records, fields: RecordFields, checkpoint, folder, name: str) -> dict:
    """Scores `records` on the FnApiRunner with fixed batches (8 records each, in order): {id: output}."""
    options = PipelineOptions(["--runner=FnApiRunner"])
    model = ModelSettings(model=str(checkpoint), device="cpu")
    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | beam.Create(records, reshuffle=False)
            | ScoreLongCLIP(model, batching=BatchSettings(min_batch_size=8, max_batch_size=8), fields=fields)
            | beam.Map(json.dumps)
            | beam.io.WriteToText(str(folder / name), shard_name_template="")
        )
    return {row["id"]: row for row in map(json.loads, (folder / name).read_text().splitlines())}


def _solid(text: str, start: int, end: int) -> list[int]:
    return [index for index in range(start, end) if not text[index].isspace()]


@pytest.mark.slow
def test_every_chunk_and_sentence_equals_the_original_and_fitting_captions_score_as_truncated(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    captions = long_caption_corpus()
    records = [
        {"id": n, "image_path": str(good_images[image]), "text": caption}
        for n, (image, caption) in enumerate((image, caption) for caption in captions for image in IMAGES[:2])
    ]
    records += [{"id": len(records), "image_path": "no/such.png", "text": captions[5]}]
    chunked = _run(
        records,
        RecordFields(long_captions="chunks", sentence_scores=True, embeddings=True),
        longclip_checkpoint,
        tmp_path,
        "c",
    )
    truncated = _run(records, RecordFields(embeddings=True), longclip_checkpoint, tmp_path, "t")
    original = reference.ReferenceScorer(longclip_state_dict)
    tokenizer = LongCLIPTokenizer()
    worst, parts = 0.0, 0
    for record in records[:-1]:
        out, text = chunked[record["id"]], record["text"]
        chunks, sentences = out["longclip_score_chunks"], out["longclip_score_sentences"]
        assert out["longclip_score_reason"] is None and out["longclip_score_truncated"] is False
        for spans in (chunks, sentences):  # every non-whitespace character in exactly one part, in order
            covered = [index for span in spans for index in _solid(text, span["start"], span["end"])]
            assert covered == _solid(text, 0, len(text))
            assert all(not text[span["start"]].isspace() and not text[span["end"] - 1].isspace() for span in spans)
        for span in chunks + sentences:
            part = text[span["start"] : span["end"]]
            assert not tokenizer(part).truncated
            worst = max(worst, abs(span["score"] - original.score(record["image_path"], part)))
            parts += 1
        assert abs(out["longclip_score"] - sum(c["score"] for c in chunks) / len(chunks)) <= 1e-7
        assert out["longclip_score_min"] == min(c["score"] for c in chunks)
        if not tokenizer(text).truncated:  # a caption that fits is one chunk, scored bit for bit as before
            assert chunks == [{"start": 0, "end": len(text), "score": out["longclip_score"]}]
            assert out["longclip_score"] == truncated[record["id"]]["longclip_score"]
            assert out["longclip_score_text_embedding"] == truncated[record["id"]]["longclip_score_text_embedding"]
        else:  # the text embedding is the L2-normalised mean of the chunks'
            assert len(chunks) > 1 and truncated[record["id"]]["longclip_score_truncated"] is True
            mean = torch.stack([original.text(text[c["start"] : c["end"]]) for c in chunks]).mean(0)
            reported = torch.tensor(out["longclip_score_text_embedding"])
            assert torch.allclose(reported, mean / mean.norm(), atol=1e-5)
    assert worst <= 1e-6, f"max |part score - original LongCLIP| = {worst} over {parts} parts"
    assert parts > 400
    failed = chunked[records[-1]["id"]]
    assert failed["longclip_score"] == 0.0 and failed["longclip_score_reason"] == "image_not_found"
    assert failed["longclip_score_chunks"] is None and failed["longclip_score_sentences"] is None
    assert failed["longclip_score_min"] is None


def test_truncate_mode_adds_no_new_fields(tmp_path, longclip_checkpoint, good_images):
    records = [{"id": 0, "image_path": str(good_images["rgb.png"]), "text": long_caption(30)}]
    (out,) = _run(records, RecordFields(), longclip_checkpoint, tmp_path, "t").values()
    assert out["longclip_score_truncated"] is True
    assert not {"longclip_score_chunks", "longclip_score_min", "longclip_score_sentences"} & set(out)
