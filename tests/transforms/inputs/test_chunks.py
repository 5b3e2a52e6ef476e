"""Chunks and sentence pieces: each fits the context, measured on its exact text with the real tokenizer, and
together they hold every non-whitespace character of the caption exactly once."""

import math
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transforms.inputs.test_sentences import assert_partition
from transforms.inputs.chunks import plan_chunks, sentence_pieces, token_counter
from transforms.inputs.sentences import split_sentences
from transforms.inputs.tokenizer import LONGCLIP_CONTEXT_LENGTH, LongCLIPTokenizer
from transforms.testing.sentence_cases import STREET, long_caption

ROOM = LONGCLIP_CONTEXT_LENGTH - 2


@pytest.fixture(scope="module")
def tokenizer():
    return LongCLIPTokenizer()


@pytest.fixture(scope="module")
def count(tokenizer):
    return token_counter(tokenizer, ROOM)


def assert_fits(text, spans, tokenizer, room=ROOM):
    for start, end in spans:
        assert len(tokenizer.encode(text[start:end])) <= room, text[start:end]


def test_a_caption_that_fits_is_one_chunk_exactly_as_given(count):
    for text in ("A dog.", "  A dog runs.  A cat sleeps.\n", "x", "\x00", STREET.sentences[0]):
        assert plan_chunks(text, count, ROOM) == [(0, len(text))]


def test_empty_and_whitespace_only_captions_have_no_chunks(count):
    for text in ("", "   ", "\n\t\u3000"):
        assert plan_chunks(text, count, ROOM) == []
        assert sentence_pieces(text, count, ROOM) == []


@pytest.mark.parametrize("sentences, tokens, chunks", [(27, 589, 3), (66, 1477, 7)])
def test_long_captions_are_packed_whole_sentences_into_few_chunks(tokenizer, count, sentences, tokens, chunks):
    text = long_caption(sentences)
    assert len(tokenizer.encode(text)) == tokens
    spans = plan_chunks(text, count, ROOM)
    assert len(spans) == chunks == math.ceil(tokens / ROOM)
    assert_partition(text, spans)
    assert_fits(text, spans, tokenizer)
    starts, ends = zip(*split_sentences(text), strict=True)
    assert all(start in starts and end in ends for start, end in spans)


def test_sentence_pieces_are_the_sentences_when_each_fits(count):
    text = long_caption(66)
    assert sentence_pieces(text, count, ROOM) == split_sentences(text)


def test_a_sentence_past_the_context_is_cut_between_words(tokenizer, count):
    words = " ".join(STREET.text.replace(".", "").replace(",", "").split())  # 232 tokens, no sentence end
    text = f"A short one. {words} {words} {words}. Another short one."
    pieces = sentence_pieces(text, count, ROOM)
    assert_partition(text, pieces)
    assert_fits(text, pieces, tokenizer)
    assert len(pieces) == 5
    assert all(
        (start == 0 or text[start - 1].isspace()) and (end == len(text) or text[end].isspace()) for start, end in pieces
    )
    chunks = plan_chunks(text, count, ROOM)
    assert_partition(text, chunks)
    assert_fits(text, chunks, tokenizer)
    assert len(chunks) == 4  # the short first sentence, 3 pieces of the long one, the last one with the last piece


@pytest.mark.parametrize(
    "word",
    [
        "".join(random.Random(0).choices(string.ascii_lowercase, k=3000)),
        "ab1/" * 750,
        "中文字幕测试" * 500,
        "x" * 20000,
    ],
    ids=["3000 random letters", "3000 mixed", "3000 CJK", "20000 x"],
)
def test_a_word_past_the_context_is_cut_between_characters(tokenizer, count, word):
    text = f"Before. {word} after."
    for spans in (plan_chunks(text, count, ROOM), sentence_pieces(text, count, ROOM)):
        assert_partition(text, spans)
        assert_fits(text, spans, tokenizer)
        assert len(spans) > 1


def test_chunks_cost_about_two_tokenizations_of_the_caption(count):
    text = long_caption(66)
    tokenized = []

    def counting(part: str) -> int:
        tokenized.append(len(part))
        return count(part)

    plan_chunks(text, counting, ROOM)
    assert sum(tokenized) <= 3 * len(text)  # the whole, each sentence, each chunk


texts = (
    st.text(st.characters(exclude_categories=()), max_size=200)
    | st.text(st.sampled_from(list("aé中1.!?。 \n\t\x00&;")), max_size=400)
    | st.builds(lambda n, c: c * n, st.integers(0, 1500), st.sampled_from(["中", "a", "ab ", "猫。", "é"]))
)


@settings(max_examples=150)
@given(texts, st.sampled_from([8, 32, ROOM]))
def test_chunks_and_pieces_fit_and_partition_any_text(tokenizer, text, room):
    count = token_counter(tokenizer, room)
    chunks = plan_chunks(text, count, room)
    if chunks != [(0, len(text))]:
        assert_partition(text, chunks)
    else:
        assert text.strip()
    assert_fits(text, chunks, tokenizer, room)
    pieces = sentence_pieces(text, count, room)
    assert_partition(text, pieces)
    assert_fits(text, pieces, tokenizer, room)
