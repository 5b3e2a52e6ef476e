"""ScoreLongCLIP in your own Beam pipeline: `python examples/score_in_your_pipeline.py [Beam options]`."""

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import RecordFields, ScoreLongCLIP

CAPTIONS = [
    {"id": 1, "image": "examples/images/red_house.png", "caption": "A red brick house with a brown roof."},
    {"id": 2, "image": "examples/images/sunset_over_sea.jpg", "caption": "A yellow sun low over a blue sea."},
    {"id": 3, "image": "examples/images/no_such_picture.png", "caption": "A cat."},
]


def run(argv=None):
    fields = RecordFields(image_key="image", text_key="caption")
    with beam.Pipeline(options=PipelineOptions(argv)) as pipeline:
        captions = pipeline | "Captions" >> beam.Create(CAPTIONS)
        scored, failed = captions | "Score" >> ScoreLongCLIP(fields=fields).with_exception_handling()
        scored | "Print scores" >> beam.Map(lambda r: print(r["id"], round(r["longclip_score"], 4)))
        failed | "Print failures" >> beam.Map(lambda r: print(r["id"], "failed:", r["longclip_score_reason"]))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
