"""LongCLIPScorer: fp32 scores equal the original LongCLIP code; its shortcuts (text cut at EOT, shared
images and texts encoded once) leave them unchanged."""

import pytest
import torch

from tests.support.reference_longclip import encode_image as reference_encode_image
from tests.support.reference_longclip import encode_text as reference_encode_text
from tests.support.reference_longclip import reference_score, rounded_like_longclip
from transforms.inputs.images import ImagePreprocessor, decode_image
from transforms.inputs.tokenizer import EOT_ID, LongCLIPTokenizer
from transforms.model.device import parse_precision
from transforms.model.scorer import LongCLIPScorer, _length_groups, pad_tokens
from transforms.testing.captions import CAPTIONS


@pytest.mark.parametrize("caption", sorted(CAPTIONS))
def test_scores_equal_original_longclip(longclip_checkpoint, longclip_state_dict, good_images, caption):
    scorer = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")
    preprocess = ImagePreprocessor(scorer.image_resolution)
    tokens = LongCLIPTokenizer(scorer.context_length)(CAPTIONS[caption])
    names = sorted(good_images)
    pixels = torch.stack([preprocess(decode_image(good_images[name].read_bytes())) for name in names])
    scores = scorer.score(pixels, [tokens.ids] * len(names))
    expected = [reference_score(longclip_state_dict, good_images[name], CAPTIONS[caption]) for name in names]
    for name, got, want in zip(names, scores, expected, strict=True):
        assert abs(got - want) < 1e-6, (name, got, want)
    assert len(set(round(s, 6) for s in scores)) > 1, "different images must score differently"


def test_openai_format_checkpoint_loads_at_context_77(openai_checkpoint, good_images):
    state_dict = torch.load(openai_checkpoint, weights_only=True)
    scorer = LongCLIPScorer.from_checkpoint(openai_checkpoint, "cpu")
    assert scorer.context_length == 77
    text = CAPTIONS["long_200_tokens"]
    tokens = LongCLIPTokenizer(77)(text)
    assert tokens.truncated
    pixels = ImagePreprocessor(scorer.image_resolution)(decode_image(good_images["rgb.png"].read_bytes()))
    got = scorer.score(pixels.unsqueeze(0), [tokens.ids])[0]
    assert abs(got - reference_score(state_dict, good_images["rgb.png"], text)) < 1e-6


@pytest.fixture(scope="module")
def scorer(longclip_checkpoint):
    return LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")


@pytest.fixture(scope="module")
def pixels(scorer, good_images):
    preprocess = ImagePreprocessor(scorer.image_resolution)
    names = ["rgb.jpg", "rgb.png", "grey.png", "cmyk.jpg"]
    return names, torch.stack([preprocess(decode_image(good_images[name].read_bytes())) for name in names])


def _token_ids(scorer):
    tokenizer = LongCLIPTokenizer(scorer.context_length)
    ids = [tokenizer(CAPTIONS[name]).ids for name in sorted(CAPTIONS)]
    # A literal <|endoftext|> mid-caption: LongCLIP pools at the first EOT, so the text stops there.
    ids.append(tokenizer("a cat <|endoftext|> and a long tail of words that must not count").ids)
    return ids


def test_text_cut_at_eot_equals_all_248_positions(scorer, longclip_state_dict):
    ids = _token_ids(scorer)
    assert max(len(i) for i in ids) == 248 and min(len(i) for i in ids) < 10
    full = pad_tokens(ids, 248)
    with torch.inference_mode():
        plain = scorer.model.encode_text(full)  # open_clip's own path: every row runs all 248 positions
        cut = scorer.encode_texts(ids)
        short_only = scorer.encode_texts([i for i in ids if len(i) <= 77])
    reference = reference_encode_text(rounded_like_longclip(longclip_state_dict), full)
    assert (cut - plain).abs().max() < 1e-5
    assert (cut - reference).abs().max() < 1e-5
    assert (short_only - plain[[len(i) <= 77 for i in ids]]).abs().max() < 1e-5
    mid_eot = ids[-1]
    assert mid_eot.index(EOT_ID) < len(mid_eot) - 1, "the literal EOT must sit before the final one"


@pytest.mark.slow
def test_shared_images_and_texts_score_as_if_each_pair_were_alone(scorer, pixels, longclip_state_dict, good_images):
    names, images = pixels
    ids = _token_ids(scorer)
    # 3 images x every caption, each caption also repeated: 48 pairs, 4 image rows, 8 distinct texts.
    pairs = [(image, text) for image in (0, 1, 0, 3) for text in range(len(ids))]
    scores = scorer.score(images, [ids[t] for _, t in pairs], [i for i, _ in pairs])
    alone = [scorer.score(images[i : i + 1], [ids[t]])[0] for i, t in pairs]
    assert max(abs(a - b) for a, b in zip(scores, alone, strict=True)) < 1e-5
    captions = [CAPTIONS[name] for name in sorted(CAPTIONS)]
    for (image, text), got in zip(pairs, scores, strict=True):
        if text < len(captions):
            want = reference_score(longclip_state_dict, good_images[names[image]], captions[text])
            assert abs(got - want) < 1e-6, (names[image], text, got, want)
    assert len({round(s, 6) for s in scores}) > len(ids), "the pairs must not all score alike"


def test_low_precision_casts_the_weights_and_stays_close(longclip_checkpoint, scorer, pixels):
    _, images = pixels
    ids = _token_ids(scorer)[: len(images)]
    bf16 = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu", precision="bf16")
    assert bf16.model.visual.conv1.weight.dtype == torch.bfloat16
    for block in (bf16.model.transformer.resblocks[0], bf16.model.visual.transformer.resblocks[-1]):
        assert block.attn.in_proj_weight.dtype == block.mlp.c_fc.weight.dtype == torch.bfloat16
        assert block.ln_1.weight.dtype == torch.float32, "LayerNorms stay fp32 for accuracy"
    assert bf16.model.text_projection.dtype == bf16.model.positional_embedding.dtype == torch.float32
    exact, low = scorer.score(images, ids), bf16.score(images, ids)
    assert 0 < max(abs(a - b) for a, b in zip(exact, low, strict=True)) < 1e-2


def test_unknown_precision_is_an_error():
    assert parse_precision("fp16") == torch.float16
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        parse_precision("int8")


def test_an_image_seen_in_a_recent_batch_is_not_encoded_again(longclip_checkpoint, pixels):
    scorer = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")
    _, images = pixels
    ids = _token_ids(scorer)[:3]
    plain = scorer.score(images[:3], ids)
    first = scorer.score(images[:2], ids[:2], image_keys=["a", "b"])
    assert max(abs(a - b) for a, b in zip(first, plain[:2], strict=True)) < 1e-5
    # Same keys promise the same pixels: the features kept from the last batch are used, not these zeros.
    zeros = torch.zeros_like(images[:2])
    later = scorer.score(zeros, [ids[1], ids[0], ids[2]], [1, 0, 0], ["a", "b"])
    assert abs(later[0] - plain[1]) < 1e-5 and abs(later[1] - plain[0]) < 1e-5
    assert abs(later[2] - scorer.score(images[:1], [ids[2]])[0]) < 1e-5
    assert abs(scorer.score(zeros[:1], [ids[0]])[0] - plain[0]) > 1e-4, "zeros would have scored differently"


def test_texts_run_in_few_groups_of_similar_length():
    assert _length_groups([3, 5, 40, 41, 77, 200, 240, 240], 4) == [2, 4, 5, 8]
    assert _length_groups([5, 5, 5], 4) == [3]
    assert _length_groups([1, 100], 1) == [2]
    assert _length_groups([], 4) == []


@pytest.mark.parametrize("bound", [1, 2])
def test_forward_passes_are_bounded_across_threads(longclip_checkpoint, pixels, bound):
    """Threads of a worker, or SDK processes calling a shared model, wait for a slot: at most `bound` batches run
    through the model at once. Observed with torch's own forward hooks, which also make each pass slow."""
    import threading
    import time

    scorer = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu", max_concurrent_batches=bound)
    running, most = [0], [0]
    lock = threading.Lock()

    def enter(module, args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)

    def leave(module, args, output):
        with lock:
            running[0] -= 1

    scorer.model.visual.ln_pre.register_forward_pre_hook(enter)  # the first module of each image pass
    scorer.model.visual.ln_pre.register_forward_hook(leave)
    names, images = pixels
    ids = LongCLIPTokenizer(scorer.context_length)(CAPTIONS["short"]).ids
    results = [None] * 4

    def score(slot):
        results[slot] = scorer.score(images, [ids] * len(names))

    threads = [threading.Thread(target=score, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == bound
    assert all(result == results[0] for result in results)


def test_features_beside_the_scores_are_the_ones_the_scores_come_from(scorer, pixels, longclip_state_dict):
    """`score_and_embed`: the same scores, and unit vectors whose clamp((dot + 1) / 2, 0, 1) is each score,
    equal to the reference's features; a shared image and a repeated caption give equal rows."""
    _, images = pixels
    ids = _token_ids(scorer)[:3]
    image_index, token_ids = [0, 1, 0, 3, 2], [ids[0], ids[1], ids[2], ids[0], ids[0]]
    plain = scorer.score(images, token_ids, image_index)
    scored = scorer.score_and_embed(images, token_ids, image_index)
    assert scored.scores == plain
    assert scored.image_features.dtype == torch.float32 and scored.image_features.device.type == "cpu"
    assert scored.image_features.shape == scored.text_features.shape == (5, scorer.model.text_projection.shape[1])
    for features in (scored.image_features, scored.text_features):
        assert (features.double().norm(dim=-1) - 1).abs().max() < 1e-5
    dots = (scored.image_features.double() * scored.text_features.double()).sum(dim=-1)
    assert ((dots + 1) / 2).clamp(0, 1).sub(torch.tensor(plain, dtype=torch.float64)).abs().max() < 1e-6
    assert torch.equal(scored.image_features[0], scored.image_features[2])
    assert torch.equal(scored.text_features[0], scored.text_features[3])
    sd = rounded_like_longclip(longclip_state_dict)
    with torch.inference_mode():
        reference_text = reference_encode_text(sd, pad_tokens([ids[1]], 248))[0]
        normalised = images[1:2].float().div(255).sub(scorer._mean).div(scorer._std)
        reference_image = reference_encode_image(sd, normalised)[0]
    assert (scored.text_features[1] - reference_text / reference_text.norm()).abs().max() < 1e-5
    assert (scored.image_features[1] - reference_image / reference_image.norm()).abs().max() < 1e-5
