"""The Ray engine's own guarantees, on one small local Ray: results reach the writer in input
order however the blocks finish, and a path a node cannot see is refused before any work."""

import sys
import time

import pytest

from datakit.io.errors import UserError
from datakit.run.ray_engine import check_reachable, record_windows, run_ray
from manifests.schema import make_row
from manifests.sources import Record

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray for the module (run_ray leaves a Ray it did not start running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    yield
    ray.shutdown()


class SlowFirst:
    """A stage whose first record(s) take seconds and the rest nothing: without preserved
    order, the later blocks would reach the driver first."""

    def __init__(self, slow: int, seconds: float):
        self.slow, self.seconds = slow, seconds

    def __call__(self, record):
        if int(record.key[1:]) < self.slow:
            time.sleep(self.seconds)
        return [make_row(record.key, "ok", source=record.source)]


def test_results_are_consumed_in_input_order_when_early_records_are_slow():
    records = [Record(f"r{i:02d}", f"in/{i}") for i in range(16)]
    consumed = []
    report = run_ray(records, SlowFirst(slow=1, seconds=2.0),
                     lambda record, results: consumed.append(results[0]["key"]),
                     workers=2, progress=False)
    assert consumed == [r.key for r in records]  # 16 blocks; r01..r15 finish first
    assert report.records == 16 and report.status == {"ok": 16}


def test_a_path_that_a_node_does_not_see_is_refused_naming_the_node(tmp_path):
    check_reachable(ray, [str(tmp_path)])  # every node (here: one) sees it
    node = ray.nodes()[0]["NodeManagerAddress"]
    with pytest.raises(UserError, match=f"^{tmp_path}/gone: not found on Ray node {node}; "
                                        "every node must see SRC at the same path"):
        check_reachable(ray, [str(tmp_path), str(tmp_path / "gone")])


def test_windows_close_at_their_count_or_at_the_bytes_their_records_carry():
    """Re-processed shard samples carry whole clips: 2048 of them held about 10 GB."""
    from synthesize.watermark import ShardSample

    clips = [ShardSample(f"k{i}", "x.tar", {"mp4": bytes(300), "json": bytes(50)})
             for i in range(7)]
    assert [len(w) for w in record_windows(clips, 100, 1000)] == [3, 3, 1]  # 350 bytes each
    members = [Record(f"m{i}", "x.tar", data=bytes(10)) for i in range(5)]
    assert [len(w) for w in record_windows(members, 2, 1 << 20)] == [2, 2, 1]
    assert [[r.key for r in w] for w in record_windows(members, 100, 25)] == [
        ["m0", "m1", "m2"], ["m3", "m4"]]
