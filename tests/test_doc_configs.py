"""Every configuration block in README.md and docs/ loads as it stands (issue 21).

An administrator copies the README's example first; when it fails (``secrets.site:
unknown secret type``) nothing else in the docs is trusted. So each fenced block tagged
``toml`` is loaded as an aioipsec TOML file and each block tagged ``swanctl`` as a
swanctl.conf, with the same loader the daemon uses. A block that cannot load on its own
(it names certificate files, or shows a few keys) says so on the line before it:
``<!-- fragment: why -->``. A block that looks like a configuration but carries neither
tag is an error too, so no example escapes the check by losing its tag.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aioipsec.config import DaemonOptions

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.M | re.S)
LOOKS_LIKE_CONFIG = re.compile(
    r"^\s*(\[(connections|secrets|daemon)[.\]]|(connections|secrets) \{)", re.M
)


def blocks() -> list[tuple[str, str, str, bool]]:
    """(where, tag, text, marked as a fragment) for every fenced block."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            fragment = before.strip().startswith("<!-- fragment")
            where = f"{path.relative_to(ROOT)}:{line}"
            found.append((where, match.group(1), match.group(2), fragment))
    return found


CONFIG_BLOCKS = [b for b in blocks() if b[1] in ("toml", "swanctl") and not b[3]]


def test_the_readme_example_is_checked() -> None:
    assert any(where.startswith("README.md") for where, *_ in CONFIG_BLOCKS)
    assert sum(tag == "swanctl" for _, tag, _, _ in CONFIG_BLOCKS) >= 1


def test_every_configuration_block_is_tagged() -> None:
    untagged = [
        where
        for where, tag, text, fragment in blocks()
        if tag not in ("toml", "swanctl") and not fragment and LOOKS_LIKE_CONFIG.search(text)
    ]
    assert not untagged, f"configuration blocks without a toml/swanctl tag: {untagged}"


@pytest.mark.parametrize(("where", "tag", "text"), [b[:3] for b in CONFIG_BLOCKS],
                         ids=[b[0] for b in CONFIG_BLOCKS])  # fmt: skip
def test_configuration_block_loads(tmp_path: Path, where: str, tag: str, text: str) -> None:
    path = tmp_path / ("aioipsec.toml" if tag == "toml" else "swanctl.conf")
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # as the docs say to keep files holding secrets
    toml = tag == "toml"
    options = DaemonOptions(config_file=path if toml else None, swanctl_conf=None if toml else path)
    configuration = options.load()  # a ConfigError here names the block's file:line
    assert configuration.connections or configuration.daemon, where


# Notes that lived beside the project while it was built, not in it: a user of the
# repository cannot open them, so the docs must carry what they said.
NOT_IN_THE_REPOSITORY = ("strongswan-here.md", "performance-notes.md", "bad-inputs.md")


def test_docs_cite_no_file_outside_the_repository() -> None:
    shipped = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    cited = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in DOCS
        for name in NOT_IN_THE_REPOSITORY
        if name in path.read_text(encoding="utf-8") and name not in shipped
    ]
    assert not cited, f"docs cite files that are not in the repository: {cited}"


def test_running_charon_beside_aioipsec_is_documented() -> None:
    """What the cited note said, now in docs/daemon.md: kernel-libipsec, the load line,
    /run in a private mount namespace."""
    text = (ROOT / "docs" / "daemon.md").read_text(encoding="utf-8")
    section = text.split("## strongSwan's charon beside aioipsec", 1)[1].split("\n## ", 1)[0]
    for needle in ("kernel-libipsec", "load = ", "unshare -m", "tmpfs /run", "STRONGSWAN_CONF"):
        assert needle in section, needle
