"""The reference cache never hands out a partial, corrupt or mismatched file."""

import pytest
import torch

from zooframe.plugins.cache import TrajectoryCache

PARAMS = {"simulator": "x", "re": 100.0, "resolution": [8, 4]}


def test_round_trip_and_prefix(tmp_path):
    cache = TrajectoryCache(tmp_path)
    frames = torch.randn(11, 2, 3)
    cache.save(PARAMS, frames)
    torch.testing.assert_close(cache.load(PARAMS, 10), frames)
    torch.testing.assert_close(cache.load(PARAMS, 4), frames[:5])
    assert cache.load(PARAMS, 11) is None  # too short: the caller regenerates
    assert cache.load({**PARAMS, "re": 200.0}, 4) is None


@pytest.mark.parametrize("damage", ["truncate", "tamper", "garbage"])
def test_damaged_files_are_reported_and_dropped(tmp_path, damage):
    cache = TrajectoryCache(tmp_path)
    path = cache.save(PARAMS, torch.randn(6, 2, 3))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "tamper":
        data = torch.load(path, weights_only=True)
        data["frames"][3] += 1.0
        torch.save(data, path)
    else:
        path.write_text("not a tensor file")
    with pytest.warns(UserWarning, match="corrupt reference cache file"):
        assert cache.load(PARAMS, 5) is None
    assert not path.exists()


def test_a_file_for_other_parameters_is_not_used(tmp_path):
    cache = TrajectoryCache(tmp_path)
    path = cache.save(PARAMS, torch.randn(6, 2, 3))
    other = {**PARAMS, "re": 5.0}
    path.rename(cache.path(other))  # e.g. a hash collision or a hand-copied file
    with pytest.warns(UserWarning, match="other parameters"):
        assert cache.load(other, 5) is None


def test_runs_writing_the_same_entry_at_once_leave_a_valid_file(tmp_path):
    import threading
    import warnings

    cache = TrajectoryCache(tmp_path)
    params = {"case": "a"}
    frames = torch.arange(6000.0).reshape(6, 1000)
    errors = []

    def write():
        for _ in range(10):
            cache.save(params, frames)

    def read():
        for _ in range(30):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = cache.load(params, 5)
            errors.extend(str(w.message) for w in caught)
            if got is not None and not torch.equal(got, frames):
                errors.append("read other frames")

    threads = [threading.Thread(target=f) for f in (write, write, write, read, read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and torch.equal(cache.load(params, 5), frames)
    assert list(tmp_path.glob("*.tmp")) == []


def test_fetch_generates_only_what_is_missing_in_one_call(tmp_path):
    cache = TrajectoryCache(tmp_path)
    params = [{"case": i} for i in range(4)]
    cache.save(params[1], torch.full((3, 2), 1.0))
    cache.save(params[2], torch.full((2, 2), 2.0))  # too short for 2 steps: made again
    calls = []

    def generate(missing):
        calls.append(missing)
        return torch.stack([torch.full((3, 2), 10.0 + i) for i in missing])

    got = cache.fetch(params, 2, generate)
    assert calls == [[0, 2, 3]] and got.shape == (4, 3, 2)
    assert [float(g[0, 0]) for g in got] == [10.0, 1.0, 12.0, 13.0]
    assert cache.fetch(params, 2, generate).equal(got) and len(calls) == 1  # all cached now
