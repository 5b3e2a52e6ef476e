"""LongCLIP image/long-caption alignment scoring as a reusable Apache Beam transform."""

from transforms.checkpoint import DEFAULT_MODEL, CheckpointNotFoundError, resolve_checkpoint
from transforms.handler import LongCLIPModelHandler
from transforms.input_errors import REASON_CODES, InputError
from transforms.longclip_model import CheckpointFormatError, LongCLIPScorer
from transforms.prepare import PairPreparer, PreparedPair
from transforms.score import ScoreLongCLIP
from transforms.tokenizer import LongCLIPTokenizer, TokenizedText

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
