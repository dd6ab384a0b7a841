"""The serial-console judgement every target shares: marker, fail patterns, excerpt."""

from __future__ import annotations

from node_runtime.recovery.targets.serial_console import (
    DEFAULT_FAIL_PATTERNS,
    ConsoleVerdict,
    ConsoleWatch,
    excerpt,
    judge,
)

MARKER = "LIFEBOAT-BOOT-OK"


def test_the_marker_is_found_and_the_excerpt_ends_at_its_line() -> None:
    console = b"SeaBIOS\r\n\x1b[2Jbooting\nhello LIFEBOAT-BOOT-OK there\nheartbeat 1\nheartbeat 2\n"
    verdict = judge(console, MARKER)
    assert verdict.marker_seen and verdict.failed_on is None and verdict.done
    assert verdict.console == b"SeaBIOS\r\n\x1b[2Jbooting\nhello LIFEBOAT-BOOT-OK there\n"
    assert verdict.excerpt == "SeaBIOS\nbooting\nhello LIFEBOAT-BOOT-OK there"


def test_a_marker_on_the_last_unfinished_line_ends_the_excerpt_there() -> None:
    verdict = judge("boot\nLIFEBOAT-BOOT-OK", MARKER)
    assert verdict.marker_seen and verdict.console == b"boot\nLIFEBOAT-BOOT-OK"


def test_a_fail_pattern_is_named() -> None:
    verdict = judge(b"SeaBIOS\nBooting from Hard Disk...\nNo bootable device.\n", MARKER)
    assert not verdict.marker_seen and verdict.done
    assert verdict.failed_on == "No bootable device" and verdict.failed_on in DEFAULT_FAIL_PATTERNS
    assert verdict.excerpt.endswith("No bootable device.")
    panic = judge("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n", None)
    assert panic.failed_on == "Kernel panic - not syncing"


def test_the_marker_wins_over_a_fail_pattern_and_patterns_can_be_chosen() -> None:
    assert judge(b"No bootable device\nLIFEBOAT-BOOT-OK\n", MARKER).marker_seen
    assert judge(b"oops: disk on fire\n", MARKER, ("on fire",)).failed_on == "on fire"
    assert judge(b"No bootable device\n", MARKER, ()).failed_on is None


def test_nothing_yet() -> None:
    verdict = judge(b"SeaBIOS (version 1.16)\nBooting from Hard Disk...\n", MARKER)
    assert verdict == ConsoleVerdict(console=b"SeaBIOS (version 1.16)\nBooting from Hard Disk...\n")
    assert not verdict.done and verdict.excerpt == "SeaBIOS (version 1.16)\nBooting from Hard Disk..."
    assert judge(b"", None).excerpt == "(no serial console output)"
    assert not judge(b"LIFEBOAT-BOOT-OK\n", "").done  # no marker: fail patterns only


def test_a_marker_split_across_reads_is_found_once_complete() -> None:
    watch = ConsoleWatch(MARKER)
    assert not watch.feed(b"line one\nthe guest says LIFEBOAT-").done
    verdict = watch.feed(b"BOOT-OK now\nmore output\n")
    assert verdict.marker_seen
    assert verdict.console == b"line one\nthe guest says LIFEBOAT-BOOT-OK now\n"


def test_a_fail_pattern_split_across_reads_is_found() -> None:
    watch = ConsoleWatch(MARKER)
    for piece in (b"Kernel pa", b"nic - not ", b"sync", b"ing: oops\n"):
        verdict = watch.feed(piece)
    assert verdict.failed_on == "Kernel panic - not syncing"


def test_a_watch_keeps_only_the_last_bytes_for_its_excerpt() -> None:
    watch = ConsoleWatch(MARKER, keep=16)
    watch.feed(b"x" * 100 + b"\n")
    verdict = watch.feed(b"LIFEBOAT-BOOT-OK\n")
    assert verdict.console == b"x" * 15 + b"\n" + b"LIFEBOAT-BOOT-OK\n"
    assert excerpt(verdict.console, lines=1) == "LIFEBOAT-BOOT-OK"
