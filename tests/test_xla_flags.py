"""The suite's compile flags: kept where given, added where XLA accepts them."""

import pytest
import xla_flags

LEVEL, EMITTERS = xla_flags.FAST_COMPILE


@pytest.mark.parametrize(
    "given,refused,want",
    [
        ("", set(), f"{LEVEL} {EMITTERS}"),
        (
            "--xla_force_host_platform_device_count=4",
            set(),
            f"--xla_force_host_platform_device_count=4 {LEVEL} {EMITTERS}",
        ),
        (
            "--xla_backend_optimization_level=2",
            set(),
            f"--xla_backend_optimization_level=2 {EMITTERS}",
        ),
        (f"{LEVEL} {EMITTERS}", {LEVEL, EMITTERS}, f"{LEVEL} {EMITTERS}"),  # nothing tried
        ("", {EMITTERS}, LEVEL),
        ("--xla_dump_to=/tmp/x", {LEVEL, EMITTERS}, "--xla_dump_to=/tmp/x"),
    ],
)
def test_flags_are_kept_where_given_and_left_out_where_refused(monkeypatch, given, refused, want):
    tried = []

    def accepted(flags):
        tried.append(flags)
        return not any(flag in refused for flag in flags.split())

    monkeypatch.setattr(xla_flags, "accepted", accepted)
    assert xla_flags.with_fast_compile(given) == want
    assert all(flag.split("=")[0] not in given for flags in tried for flag in flags.split())


def test_an_unknown_flag_is_refused_and_a_known_one_accepted():
    assert not xla_flags.accepted("--xla_no_such_flag_anywhere=1")
    assert xla_flags.accepted(LEVEL)
