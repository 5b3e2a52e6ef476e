"""`python -m bench.sentence_splitters`: sentence splitters measured on the hand-checked caption set.

Per candidate: cases split exactly right, boundary precision / recall / F1, sentences per second on
long synthetic captions, and whether it needs a model download. A boundary is counted in non-whitespace
characters, so a splitter that moves or rewrites whitespace is not penalised (the library maps the
sentences back onto the text); one that drops or changes other characters is, and is counted as such.
Candidates that are not installed print "not installed".
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Callable, NamedTuple, Optional

from transforms.testing.sentence_cases import CASES, long_caption

Splitter = Callable[[str], list[str]]


class Candidate(NamedTuple):
    name: str
    load: Callable[[], Splitter]  # raises ImportError when the package is absent
    download: str  # what it fetches at run time, "no" if nothing
    license: str


# Whitespace after . ! ? … (and a closing quote or bracket); anything after a CJK full stop, ! or ?.
_REGEX_END = re.compile(
    r"""(?:(?<=[.!?…])|(?<=[.!?…]["'”’)\]]))\s+|(?:(?<=[。！？])|(?<=[。！？][」』”]))(?![」』”])\s*"""
)


def _regex() -> Splitter:
    return lambda text: _REGEX_END.split(text)


def _pysbd() -> Splitter:
    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False)
    return segmenter.segment


def _sentencex() -> Splitter:
    import sentencex

    return lambda text: list(sentencex.segment("en", text))


def _blingfire() -> Splitter:
    import blingfire

    return lambda text: blingfire.text_to_sentences(text).split("\n")


def _syntok() -> Splitter:
    import syntok.segmenter

    def split(text: str) -> list[str]:
        return [
            "".join(str(token) for token in sentence)
            for paragraph in syntok.segmenter.analyze(text)
            for sentence in paragraph
        ]

    return split


def _spacy() -> Splitter:
    import spacy

    nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    return lambda text: [sentence.text for sentence in nlp(text).sents]


def _sentence_splitter() -> Splitter:
    from sentence_splitter import SentenceSplitter

    return SentenceSplitter(language="en").split


def _nltk() -> Splitter:
    import nltk

    nltk.data.find("tokenizers/punkt_tab/english/")  # LookupError: the model was never downloaded
    return nltk.sent_tokenize


CANDIDATES = (
    Candidate("regex baseline", _regex, "no", "-"),
    Candidate("pysbd", _pysbd, "no", "MIT"),
    Candidate("sentencex", _sentencex, "no", "MIT"),
    Candidate("blingfire", _blingfire, "no (rules ship in the wheel)", "MIT"),
    Candidate("syntok", _syntok, "no", "MIT"),
    Candidate("spacy sentencizer", _spacy, "no", "MIT"),
    Candidate("sentence-splitter", _sentence_splitter, "no", "LGPL-3.0"),
    Candidate("nltk punkt", _nltk, "yes (nltk.download('punkt_tab'))", "Apache-2.0"),
)


def _ends(text: str, sentences: list[str]) -> Optional[set[int]]:
    """Where each sentence but the last ends, counted in non-whitespace characters; None where the sentences'
    non-whitespace characters are not the text's (the splitter dropped or rewrote some)."""
    solid = "".join(text.split())
    ends, count = set(), 0
    for sentence in sentences:
        count += len("".join(sentence.split()))
        ends.add(count)
    if "".join("".join(s.split()) for s in sentences) != solid:
        return None
    return ends - {0, len(solid)}


class Score(NamedTuple):
    exact: int
    precision: float
    recall: float
    f1: float
    altered: int
    wrong: list[int]


def accuracy(split: Splitter) -> Score:
    exact = found = predicted = expected = altered = 0
    wrong = []
    for index, (text, sentences) in enumerate(CASES):
        truth = _ends(text, sentences)
        guess = _ends(text, split(text))
        if guess is None:
            altered += 1
            wrong.append(index)
            guess = set()
        exact += guess == truth
        if guess != truth and index not in wrong:
            wrong.append(index)
        found += len(guess & truth)
        predicted += len(guess)
        expected += len(truth)
    precision = found / predicted if predicted else 0.0
    recall = found / expected
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(exact, precision, recall, f1, altered, wrong)


def seconds(split: Splitter, captions: list[str]) -> float:
    """Seconds to split the captions (best of two passes)."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for caption in captions:
            split(caption)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sentence_splitters", description=__doc__)
    parser.add_argument("--captions", type=int, default=100, help="synthetic captions for the speed run")
    parser.add_argument("--sentences", type=int, default=60, help="sentences per synthetic caption")
    parser.add_argument("--show-failures", action="store_true", help="print each candidate's wrong splits")
    args = parser.parse_args()
    captions = [long_caption(args.sentences, seed) for seed in range(args.captions)]
    total = args.captions * args.sentences
    longest = long_caption(400, seed=args.captions)  # about 9,000 tokens: shows a cost growing faster than n
    print(f"{len(CASES)} hand-checked cases; speed on {args.captions} captions of {args.sentences} sentences")
    print(
        "| splitter | exact cases | precision | recall | F1 | text altered | sentences/s "
        "| one 400-sentence caption | model download | license |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = {}
    for candidate in CANDIDATES:
        try:
            split = candidate.load()
        except ImportError:
            print(f"| {candidate.name} | not installed | | | | | | | {candidate.download} | {candidate.license} |")
            continue
        except LookupError:
            print(
                f"| {candidate.name} | model not downloaded | | | | | | | {candidate.download} | {candidate.license} |"
            )
            continue
        score = accuracy(split)
        rate = total / seconds(split, captions)
        failures[candidate.name] = (split, score.wrong)
        print(
            f"| {candidate.name} | {score.exact}/{len(CASES)} | {score.precision:.3f} | {score.recall:.3f} "
            f"| {score.f1:.3f} | {score.altered} | {rate:,.0f} | {seconds(split, [longest]) * 1000:,.1f} ms "
            f"| {candidate.download} | {candidate.license} |",
            flush=True,
        )
    if args.show_failures:
        for name, (split, wrong) in failures.items():
            print(f"\n{name}: {len(wrong)} cases wrong")
            for index in wrong:
                text = CASES[index].text
                print(f"  [{index}] {[s.strip() for s in split(text) if s.strip()]!r}"[:600])


if __name__ == "__main__":
    main()
