"""The erasure register: appended whole, read again only when it changes, and what it masks."""

import pandas as pd

from engine.artifacts.erasures import ErasureRegister


def test_the_register_masks_bundles_trained_before_the_erasure_only(tmp_path):
    register = ErasureRegister(tmp_path)
    assert register.erased() == {} and not register.masked("p1", trained_at=0.0)
    register.add(["p1", "p2"], erased_at=100.0)
    assert register.masked("p1", trained_at=50.0)  # trained on data read before the erasure
    assert not register.masked("p1", trained_at=150.0)  # read after it: their old data was left out
    assert not register.masked("p3", trained_at=50.0)


def test_training_keeps_what_an_erased_shopper_did_after_the_erasure(tmp_path):
    register = ErasureRegister(tmp_path)
    register.add(["gone"], erased_at=pd.Timestamp("2024-05-02", tz="UTC").timestamp())
    events = pd.DataFrame(
        {
            "user_id": ["gone", "gone", "kept"],
            "timestamp": pd.to_datetime(["2024-05-01", "2024-05-03", "2024-05-01"], utc=True),
        }
    )
    assert register.keep_events(events).tolist() == [False, True, True]


def test_a_torn_line_is_skipped_not_fatal(tmp_path):
    register = ErasureRegister(tmp_path)
    register.add(["a"], erased_at=1.0)
    with open(register.path, "a") as f:
        f.write('{"pseudonym": "b", "erased_')  # a crash mid-write
    assert register.erased() == {"a": 1.0}
    register.add(["c"], erased_at=2.0)
    assert set(ErasureRegister(tmp_path).erased()) == {"a", "c"}
