"""flexiffusion.threads.num_threads: torch's thread count for one block, the previous count restored."""
import pytest
import torch

from flexiffusion.threads import num_threads


@pytest.fixture(autouse=True)
def _two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_sets_the_count_for_the_block_and_restores_it():
    with num_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        with num_threads(3):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_restores_the_count_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with num_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_none_leaves_the_count_and_bad_counts_change_nothing():
    with num_threads(None) as n:
        assert n == 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="thread count must be >= 1, got 0"):
        with num_threads(0):
            pass
    assert torch.get_num_threads() == 2
