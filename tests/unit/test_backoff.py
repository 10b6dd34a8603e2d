from watcher.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_doubles_from_800ms_to_a_30s_ceiling_without_jitter() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, rand=lambda: 0.0)
    delays = []
    for _ in range(9):
        delays.append(backoff.next_delay())
        clock.now += 1
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


def test_jitter_stretches_each_delay_by_up_to_its_own_length() -> None:
    backoff = Backoff(clock=Clock(), rand=lambda: 0.999)
    first = backoff.next_delay()
    assert 0.8 < first < 1.6


def test_resets_after_two_quiet_minutes() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, rand=lambda: 0.0)
    for _ in range(5):
        backoff.next_delay()
    clock.now += 121
    assert backoff.next_delay() == 0.8


def test_does_not_reset_within_two_minutes() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, rand=lambda: 0.0)
    backoff.next_delay()
    clock.now += 119
    assert backoff.next_delay() == 1.6
