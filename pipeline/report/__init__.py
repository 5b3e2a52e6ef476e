"""A report on scored rows: `python -m pipeline.report --input <scored files> --output <folder>`.

options.py (flags), statistics.py (the Beam pipeline's figures), thumbnails.py, charts.py (matplotlib),
page.py (report.html), job.py (`run(argv, ...)`: the pipeline, then the files).
"""
