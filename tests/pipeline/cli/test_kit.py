"""The shared CLI kit: a usage error is two lines whatever the message holds."""

import pytest

from pipeline.cli.kit import fail


def test_a_usage_error_is_one_line_even_when_a_library_message_spans_several(capsys):
    """Arrow's "Couldn't deserialize thrift: ...\\n" split a Parquet refusal's line in two."""
    with pytest.raises(SystemExit) as stopped:
        fail("python -m pipeline", "--input: x.parquet is not readable (thrift: no more data.\n): replace it")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: see python -m pipeline --help",
        "python -m pipeline: error: --input: x.parquet is not readable (thrift: no more data. ): replace it",
    ]
