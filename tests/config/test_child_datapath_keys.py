"""swanctl.conf's child ``reqid``, ``priority``, ``icmp`` and ``copy_df``: read into the
model, and the fixed reqid kept by the Child SA table (the data path's use of priority and
icmp is in tests/esp/test_icmp_errors.py and esp/spd.py's ordering, copy_df's in
tests/e2e/test_pmtu.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aioipsec.config import ConfigError, load_configuration
from aioipsec.runtime.children import ChildTable

CONF = """connections {
   gw {
      remote_addrs = 192.0.2.2
      local { auth = psk
      }
      remote { auth = psk
      }
      children {
         net {
            local_ts = 10.1.0.0/16
            remote_ts = 10.2.0.0/16
            %s
         }
      }
   }
}
secrets { ike-1 { secret = 0x0123456789abcdef0123456789abcdef } }
"""


def _load(tmp_path: Path, lines: str):
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % lines)
    conf.chmod(0o600)
    return load_configuration(swanctl_path=conf)


def test_child_keys_are_read(tmp_path: Path) -> None:
    configuration = _load(
        tmp_path, "reqid = 7\n            priority = 1200\n            icmp = yes\n"
        "            copy_df = no"
    )  # fmt: skip
    child = configuration.connections["gw"].children["net"]
    assert (child.reqid, child.priority, child.icmp, child.copy_df) == (7, 1200, True, False)
    default = _load(tmp_path, "").connections["gw"].children["net"]
    assert (default.reqid, default.priority, default.icmp, default.copy_df) == (0, 0, False, True)


@pytest.mark.parametrize(
    "line", ["reqid = -1", "priority = high", "icmp = sometimes", "copy_df = maybe"]
)
def test_bad_values_name_the_key(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, line)
    assert caught.value.key == f"connections.gw.children.net.{line.split()[0]}"


def test_fixed_reqid_is_kept_and_skipped_by_allocation() -> None:
    routes: Any = None  # reqid_for never touches the routes
    table = ChildTable(routes, on_acquire=lambda *a: None, on_limit=lambda *a: None)
    assert table.reqid_for("gw", "net", fixed=2) == 2
    assert table.reqid_for("gw", "net") == 2  # updown's PLUTO_REQID asks without it
    first, second = table.reqid_for("other", "a"), table.reqid_for("other", "b")
    assert len({2, first, second}) == 3  # allocation never hands out the fixed 2


@pytest.mark.parametrize("mode,words", [("iptfs", "9347"), ("beet", "BEET")])
def test_iptfs_and_beet_are_refused_saying_why(tmp_path: Path, mode: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f"mode = {mode}")
    assert caught.value.key == "connections.gw.children.net.mode"
    assert words in caught.value.reason and "tunnel or transport" in (caught.value.hint or "")


def test_trap_any_is_refused_saying_why(tmp_path: Path) -> None:
    """strongSwan's trap-any (a trap with no peer address and remote_ts = dynamic) would
    cover nothing here: refused, naming start_action."""
    conf = tmp_path / "swanctl.conf"
    conf.write_text(
        "connections { any { local { auth = psk\n }\n remote { auth = psk\n }\n"
        " children { t { start_action = trap\n } } } }\n"
        "secrets { ike { secret = 0x00112233445566778899aabbccddeeff } }\n"
    )
    conf.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_configuration(swanctl_path=conf)
    assert caught.value.key == "connections.any.children.t.start_action"
    assert "trap-any" in caught.value.reason
