import signal

import pytest

from kobako.linux.signals import docker_signal, signal_number


def test_names_numbers_and_realtime_signals():
    assert signal_number("9") == signal_number("KILL") == signal_number("sigkill") == 9
    assert signal_number("RTMIN+3") == signal.SIGRTMIN + 3
    assert signal_number("SIGRTMAX-1") == signal.SIGRTMAX - 1
    with pytest.raises(ValueError):
        signal_number("RTMIN+99")
    with pytest.raises(ValueError):
        signal_number("BOGUS")


@pytest.mark.parametrize("value, message", [
    ("0", "Invalid signal: 0"), ("SIG42", "Invalid signal: SIG42"), ("-1", "Invalid signal: -1"),
    ("99", "the linux daemon does not support signal 99"),
])
def test_docker_refuses_what_dockerd_refuses(value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        docker_signal(value)
    assert docker_signal("TERM") == signal.SIGTERM and docker_signal(64) == 64
