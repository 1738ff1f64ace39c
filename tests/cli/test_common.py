"""Model sources on every platform: a Windows path that is not there yet still reaches the
loader (which says "checkpoint not found"), never the "unknown variant" usage error."""

from __future__ import annotations

import argparse

import pytest

from sam2ui.cli.common import add_model_options, model_source


def _source(*argv: str) -> str:
    parser = argparse.ArgumentParser(prog="sam2ui")
    add_model_options(parser)
    return model_source(parser.parse_args(list(argv)), parser)


@pytest.mark.parametrize(
    "name",
    [
        r"C:\models\sam2.1_hiera_tiny.pt",  # Windows, absolute
        r"models\sam2.1_hiera_tiny.pt",  # Windows, relative
        "C:/models/sam2.1_hiera_tiny.pt",  # Windows, forward slashes
        "D:weights.pt",  # Windows, drive-relative
        "/models/sam2.1_hiera_tiny.pt",  # POSIX
        "facebook/sam2.1-hiera-small",  # a hub id
    ],
)
def test_paths_and_hub_ids_go_to_the_loader_as_given(name: str) -> None:
    assert _source("--model", name) == name


def test_variant_names_become_hub_ids_and_unknown_ones_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _source("--model", "sam2.1-hiera-small") == "facebook/sam2.1-hiera-small"
    assert _source() == "facebook/sam2.1-hiera-tiny"
    with pytest.raises(SystemExit):
        _source("--model", "sam2.1-hiera-huge")
    assert "unknown SAM 2 variant" in capsys.readouterr().err
