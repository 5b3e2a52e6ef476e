"""Command-line options of the scoring job, as a Beam `PipelineOptions` subclass."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.inputs import images
from transforms.model.locate import DEFAULT_MODEL


class ScoreLongCLIPOptions(PipelineOptions):
    """Flags of `python -m pipeline`; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        source = parser.add_argument_group("input (exactly one)")
        source.add_argument("--input", help="JSONL file or glob, local or gs://; one JSON object per line")
        source.add_argument(
            "--input_subscription",
            help="Pub/Sub subscription projects/P/subscriptions/S; each message's data is one JSON object "
            "(needs --streaming)",
        )
        source.add_argument(
            "--input_topic",
            help="Pub/Sub topic projects/P/topics/T, read through a temporary subscription (needs --streaming)",
        )
        source.add_argument(
            "--id_label", help="Pub/Sub attribute holding a unique id, for deduplication (Dataflow only)"
        )
        source.add_argument(
            "--timestamp_attribute",
            help="Pub/Sub attribute holding the event time (ms since epoch or RFC 3339; default: publish time); "
            "messages without a valid one are dead-lettered",
        )
        source.add_argument(
            "--attributes_key",
            help="keep each Pub/Sub message's attributes on its record, as an object under this field",
        )

        sink = parser.add_argument_group("output (at least one)")
        sink.add_argument("--output", help="path prefix of the scored JSONL files, local or gs://")
        sink.add_argument(
            "--output_table",
            help="BigQuery table PROJECT:DATASET.TABLE (or DATASET.TABLE with --project) for scored rows; "
            "created if needed",
        )
        sink.add_argument(
            "--window_seconds",
            type=float,
            default=60,
            help="streaming: scored and dead-letter files are written per window of this length (default: 60)",
        )
        sink.add_argument(
            "--dead_letter",
            help="path prefix of dead-letter JSONL files (default: <output>.dead_letter, when --output is set)",
        )
        sink.add_argument("--dead_letter_topic", help="Pub/Sub topic projects/P/topics/T for dead-letter entries")
        sink.add_argument(
            "--dead_letter_table",
            help="BigQuery table for dead-letter entries (default: <output_table>_dead_letter, "
            "when only --output_table is set)",
        )

        model = parser.add_argument_group("model")
        model.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            help="Hugging Face Hub id, local file (.pt, .safetensors) or folder (incl. a Hugging Face CLIPModel), "
            "or gs:// URI of a LongCLIP checkpoint "
            f"(default: {DEFAULT_MODEL})",
        )
        model.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
        model.add_argument(
            "--precision",
            default="fp32",
            choices=("fp32", "bf16", "fp16"),
            help="model weights: fp32 (exact; default), or bf16/fp16 for faster GPUs (see README, Performance)",
        )
        model.add_argument(
            "--stored_weights",
            action="store_true",
            help="use a LongCLIP/OpenAI checkpoint's weights as stored; by default they are rounded to fp16 "
            "as LongCLIP's own loader does, so scores equal the original evaluator's",
        )
        model.add_argument("--min_batch_size", type=int, default=1, help="smallest inference batch (default: 1)")
        model.add_argument("--max_batch_size", type=int, default=32, help="largest inference batch (default: 32)")
        model.add_argument(
            "--max_batch_duration_secs",
            type=float,
            default=None,
            help="streaming on Dataflow: let batches fill across bundles, each record waiting at most this long "
            "(default: batches never outlive a bundle, so no record waits for others)",
        )
        model.add_argument(
            "--share_model_across_processes",
            action="store_true",
            help="load one model per machine shared by all worker processes (use on GPU workers)",
        )

        record = parser.add_argument_group("records")
        record.add_argument("--image_key", default="image_path", help="field holding the image path or URL")
        record.add_argument("--text_key", default="text", help="field holding the caption")
        record.add_argument(
            "--output_key",
            default="longclip_score",
            help="field for the score; <key>_error and <key>_truncated are added beside it",
        )
        record.add_argument(
            "--image_root", default=None, help="folder or URI prefix for relative image paths (default: working dir)"
        )
        record.add_argument(
            "--max_image_bytes",
            type=int,
            default=images.DEFAULT_MAX_IMAGE_BYTES,
            help="larger image files are scored 0.0 with image_too_large (default: %(default)s)",
        )
        record.add_argument(
            "--max_image_pixels",
            type=int,
            default=images.DEFAULT_MAX_IMAGE_PIXELS,
            help="images with more pixels are refused as decompression bombs (default: %(default)s)",
        )
        record.add_argument(
            "--http_timeout_secs",
            type=float,
            default=images.DEFAULT_HTTP_TIMEOUT_SECS,
            help="time limit for fetching one http(s) image, body included (default: %(default)s)",
        )
