"""The tokenizer must produce LongCLIP's ids exactly, and say when it truncated."""

import open_clip
import pytest

from transforms.inputs.tokenizer import EOT_ID, SOT_ID, LongCLIPTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return LongCLIPTokenizer()


def test_known_clip_ids(tokenizer):
    # Ids from OpenAI CLIP's published vocabulary: a=320, photo=1125, of=539, cat=2368, dog=1929.
    assert tokenizer("a photo of a cat").ids == (SOT_ID, 320, 1125, 539, 320, 2368, EOT_ID)
    assert tokenizer("A photo of a DOG").ids == (SOT_ID, 320, 1125, 539, 320, 1929, EOT_ID)


def test_whitespace_is_collapsed_before_tokenizing(tokenizer):
    assert tokenizer("  a\tphoto\n\nof   a cat \r\n").ids == tokenizer("a photo of a cat").ids


def test_html_entities_and_mojibake_are_cleaned_like_openai(tokenizer):
    assert tokenizer("cats &amp; dogs").ids == tokenizer("cats & dogs").ids
    assert tokenizer("caf\u00c3\u00a9").ids == tokenizer("caf\u00e9").ids  # ftfy repairs mojibake


def test_empty_text_is_sot_eot(tokenizer):
    assert tokenizer("").ids == (SOT_ID, EOT_ID)


@pytest.mark.parametrize("words", [1, 100, 245, 246, 247, 400])
def test_truncation_keeps_eot_last_and_is_reported(tokenizer, words):
    text = " ".join(["cat"] * words)  # "cat" is one BPE token
    tokens = tokenizer(text)
    assert len(tokens.ids) == min(words + 2, 248)
    assert tokens.ids[0] == SOT_ID and tokens.ids[-1] == EOT_ID
    assert tokens.truncated == (words + 2 > 248)


def test_context_77_for_openai_checkpoints():
    tokens = LongCLIPTokenizer(77)(" ".join(["cat"] * 100))
    assert len(tokens.ids) == 77 and tokens.truncated and tokens.ids[-1] == EOT_ID


def test_literal_special_tokens_map_to_their_ids_as_in_longclip(tokenizer):
    # LongCLIP's (OpenAI's) tokenizer treats "<|endoftext|>" in text as EOT; open_clip's does not.
    assert tokenizer("a <|endoftext|> cat").ids == (SOT_ID, 320, EOT_ID, 2368, EOT_ID)


@pytest.mark.parametrize(
    "text",
    [
        "A man in a red jacket rides a bicycle past a bakery, where loaves cool in the window.",
        "Numbers 12,345.67 and 3rd-place; it's what they'd've said — naïve café résumé 日本語のテキスト 🙂",
        "Don't, won't, we're, I'm, you'll, she'd: contractions! (parentheses) [brackets] {braces}",
    ],
)
def test_agrees_with_open_clip_on_ordinary_text(tokenizer, text):
    reference = open_clip.tokenizer.SimpleTokenizer(context_length=248)([text])[0].tolist()
    ids = list(tokenizer(text).ids)
    assert reference[: len(ids)] == ids and not any(reference[len(ids) :])


def test_bpe_cache_stays_bounded():
    small = LongCLIPTokenizer(cache_size=10)
    first = small(" ".join(f"word{i}" for i in range(100))).ids
    assert len(small._cache) == 10
    assert small(" ".join(f"word{i}" for i in range(100))).ids == first


def test_huge_caption_gives_the_ids_of_full_encoding_then_truncation(tokenizer):
    text = " ".join(f"word{i} and more" for i in range(100_000))
    full = [SOT_ID, *tokenizer.encode(text), EOT_ID]
    expected = tuple(full[:247] + [EOT_ID])
    assert tokenizer(text) == (expected, True)
