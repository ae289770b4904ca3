"""The system's time zone (:func:`pvcharge.planning.target.local_zone`): read once, read again when the
zone file or link changes."""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pvcharge.planning import target

NOON = datetime(2026, 12, 8, 12, tzinfo=UTC)


def tzif(offset_s: int, abbreviation: str) -> bytes:
    """A TZif (version 1) zone file of one fixed offset (RFC 8536): no transitions, one local time type."""
    chars = abbreviation.encode("ascii") + b"\0"
    header = b"TZif" + b"\0" + bytes(15) + struct.pack(">6l", 0, 0, 0, 0, 1, len(chars))
    return header + struct.pack(">lBB", offset_s, 0, 0) + chars


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """``LOCALTIME`` at ``tmp_path/localtime``, no ``$TZ``, nothing cached; the paths read, in order."""
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setattr(target, "LOCALTIME", tmp_path / "localtime")
    monkeypatch.setattr(target, "_localtime_zone", None)
    done: list[str] = []
    original = target._read_localtime

    def counting(path: str) -> ZoneInfo:
        done.append(path)
        return original(path)

    monkeypatch.setattr(target, "_read_localtime", counting)
    return done


def offset(zone: ZoneInfo) -> timedelta | None:
    return NOON.astimezone(zone).utcoffset()


def test_a_zone_file_is_read_once_and_again_when_it_changes(tmp_path: Path, reads: list[str]) -> None:
    localtime = tmp_path / "localtime"
    localtime.write_bytes(tzif(3600, "ONE"))
    assert [offset(target.local_zone()) for _ in range(5)] == [timedelta(hours=1)] * 5
    assert len(reads) == 1

    mtime_ns = localtime.stat().st_mtime_ns
    localtime.write_bytes(tzif(7200, "TWO"))  # the same size and inode: the mtime tells
    os.utime(localtime, ns=(mtime_ns + 1_000_000_000, mtime_ns + 1_000_000_000))
    assert offset(target.local_zone()) == timedelta(hours=2)
    assert offset(target.local_zone()) == timedelta(hours=2)
    assert len(reads) == 2

    replacement = tmp_path / "new"
    replacement.write_bytes(tzif(-5 * 3600, "FIVE"))
    replacement.replace(localtime)  # a new inode and size, as a package update writes it
    assert offset(target.local_zone()) == timedelta(hours=-5)
    assert len(reads) == 3


def test_a_link_is_followed_again_when_it_points_elsewhere(tmp_path: Path, reads: list[str]) -> None:
    zones = tmp_path / "zoneinfo" / "Etc"  # a zone database of two files: the link names the zone
    zones.mkdir(parents=True)
    (zones / "GMT-3").write_bytes(tzif(3 * 3600, "PLUS3"))
    (zones / "GMT+4").write_bytes(tzif(-4 * 3600, "MINUS4"))
    localtime = tmp_path / "localtime"
    localtime.symlink_to(zones / "GMT-3")
    assert target.local_zone().key == "Etc/GMT-3" == target.local_zone().key
    assert len(reads) == 1
    localtime.unlink()
    localtime.symlink_to(zones / "GMT+4")
    assert target.local_zone().key == "Etc/GMT+4"
    assert offset(target.local_zone()) == timedelta(hours=-4)
    assert len(reads) == 2


def test_tz_wins_and_without_a_zone_file_the_zone_is_utc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reads: list[str]
) -> None:
    assert target.local_zone().key == "UTC"  # no file at LOCALTIME
    (tmp_path / "localtime").write_bytes(tzif(3600, "ONE"))
    assert offset(target.local_zone()) == timedelta(hours=1)  # created later: picked up
    monkeypatch.setenv("TZ", ":Asia/Tokyo")
    assert target.local_zone().key == "Asia/Tokyo"
    monkeypatch.setenv("TZ", "Nowhere/Atlantis")  # not a zone: /etc/localtime's, as before
    assert offset(target.local_zone()) == timedelta(hours=1)
    assert len(reads) == 2
