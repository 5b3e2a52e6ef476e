"""LongCLIP image/long-caption alignment scoring as a reusable Apache Beam transform."""

from transforms.beam.handler import LongCLIPModelHandler
from transforms.beam.score import ScoreLongCLIP
from transforms.inputs.prepare import PairPreparer, PreparedPair
from transforms.inputs.reasons import REASON_CODES, InputError
from transforms.inputs.tokenizer import LongCLIPTokenizer, TokenizedText
from transforms.model.formats import CheckpointFormatError
from transforms.model.locate import DEFAULT_MODEL, CheckpointNotFoundError, resolve_checkpoint
from transforms.model.scorer import LongCLIPScorer

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "InputError",
    "LongCLIPModelHandler",
    "LongCLIPScorer",
    "LongCLIPTokenizer",
    "PairPreparer",
    "PreparedPair",
    "REASON_CODES",
    "ScoreLongCLIP",
    "TokenizedText",
    "resolve_checkpoint",
]
