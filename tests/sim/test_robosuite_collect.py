"""robosuite demos -> RLDS -> the data pipeline, with no special case for the Panda scenes."""
from __future__ import annotations

import numpy as np
import pytest

from sim.collect import CollectConfig, collect, dataset_name
from sim.robosuite_scenes import PROPRIO_NAMES


@pytest.mark.slow  # ~30 s: TensorFlow import, two rendered episodes, tfds write and read
def test_lift_demos_round_trip_through_the_data_pipeline(tmp_path):
    from vla.data import load_frames

    result = collect(CollectConfig("lift", 2, tmp_path, image_size=32, seed=3))
    assert result.successes["expert"] == (2, 2)
    frames = list(load_frames(dataset_name("lift"), tmp_path))
    assert len(frames) == result.steps and len({f["episode_id"] for f in frames}) == 2
    first = frames[0]
    assert first["instruction"] == "lift the red cube"
    assert set(first["images"]) == {"primary", "wrist"} and first["images"]["wrist"].shape == (32, 32, 3)
    assert first["state"].shape == (len(PROPRIO_NAMES),) and first["action"].shape == (7,)
    actions = np.stack([f["action"] for f in frames])
    assert np.abs(actions[:, :3]).max() <= 0.05 and set(np.unique(actions[:, 6])) == {0.0, 1.0}
    # the third-person and wrist images of one frame are different views
    assert np.abs(first["images"]["primary"].astype(int) - first["images"]["wrist"]).mean() > 10
