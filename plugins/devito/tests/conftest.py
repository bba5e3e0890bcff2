"""A small plate for the tests: 32 x 32 nodes of 1 mm, the pulse at 1 MHz (the same 6 points per
wavelength as the example), reference 2x finer, two training flaws and one held out."""

import os

import pytest

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"  # each test names the registry it uses

SMALL = {"kind": "pulse_echo", "cells": [32, 32], "spacing_mm": 1.0, "frequency_mhz": 1.0, "reference_factor": 2,
         "aperture_mm": 5.0, "sponge_mm": 5.0, "receivers": 8,
         "train_flaws": [{"x_mm": 13.0, "depth_mm": 19.0, "radius_mm": 2.5},
                         {"x_mm": 18.0, "depth_mm": 21.0, "radius_mm": 4.0, "aspect": 0.3, "angle_deg": 20.0}],
         "test_flaws": [{"x_mm": 16.0, "depth_mm": 20.0, "radius_mm": 3.0}]}


@pytest.fixture
def small(tmp_path_factory):
    return {**SMALL, "cache_dir": str(tmp_path_factory.getbasetemp() / "reference-cache")}
