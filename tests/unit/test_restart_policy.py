from kobako.engine.restart import INITIAL_DELAY, MAX_DELAY, RestartPolicy, next_delay


def test_no_policy_never_restarts():
    policy = RestartPolicy(None)
    assert not policy.should_restart(1, 0, False)
    assert not policy.start_with_daemon(1, 0, False)


def test_always_and_unless_stopped():
    always = RestartPolicy({"Name": "always"})
    assert always.should_restart(0, 5, False)
    assert not always.should_restart(0, 5, True)  # docker stop wins until the next start
    assert always.start_with_daemon(0, 5, True)  # ...and the daemon's start is one
    unless = RestartPolicy({"Name": "unless-stopped"})
    assert unless.should_restart(0, 0, False)
    assert unless.start_with_daemon(0, 0, False)
    assert not unless.start_with_daemon(0, 0, True)


def test_on_failure_counts_retries():
    policy = RestartPolicy({"Name": "on-failure", "MaximumRetryCount": 3})
    assert not policy.should_restart(0, 0, False)
    assert policy.should_restart(7, 2, False)
    assert not policy.should_restart(7, 3, False)
    assert policy.start_with_daemon(7, 1, False)
    assert not policy.start_with_daemon(0, 1, False)
    assert RestartPolicy({"Name": "on-failure"}).should_restart(1, 1000, False)  # no maximum


def test_back_off_doubles_to_a_minute_and_resets_after_a_good_run():
    delay = next_delay(0, 0)
    assert delay == INITIAL_DELAY
    for _ in range(20):
        delay = next_delay(delay, 0.5)
    assert delay == MAX_DELAY
    assert next_delay(delay, 11) == INITIAL_DELAY


def test_policies_dockerd_refuses_and_those_it_takes():
    problem = RestartPolicy.problem
    assert problem({"Name": "on-failure", "MaximumRetryCount": -1}) == \
        "invalid restart policy: maximum retry count cannot be negative"
    assert problem({"Name": "always", "MaximumRetryCount": 3}) == \
        "invalid restart policy: maximum retry count can only be used with 'on-failure'"
    assert problem({"Name": "no", "MaximumRetryCount": -1}).endswith(" and cannot be negative")
    assert problem({"Name": "bogus"}) == (
        "invalid restart policy: unknown policy 'bogus'; use one of 'no', 'always', "
        "'on-failure', or 'unless-stopped'")
    for ok in (None, {}, {"Name": "", "MaximumRetryCount": 5}, {"Name": "unless-stopped"},
               {"Name": "on-failure", "MaximumRetryCount": 3}, {"Name": "always",
                                                                "MaximumRetryCount": 0}):
        assert problem(ok) is None, ok
