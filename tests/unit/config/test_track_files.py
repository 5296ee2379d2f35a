"""vrrp_track_files and an instance's track_files: shorthand, defaults and every mistake."""

from __future__ import annotations

import pytest

from lvsha.config import ConfigError, load_text
from lvsha.vrrp.params import trackers
from lvsha.vrrp.tracking import FileTracker

FILES = """\
vrrp_track_files:
  maint: {file: /run/lvsha/maint, weight: 0, init: 0}
  prio:
    file: /run/lvsha/prio
    weight: -10
    reverse: true
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [192.0.2.10/24]
    track_files: %s
"""


def test_track_files_take_the_files_weight_unless_overridden() -> None:
    config = load_text(FILES % "[maint, {file: prio, weight: 3, reverse: false}]")
    maint = config.vrrp_track_files["maint"]
    assert (maint.weight, maint.reverse, maint.init, maint.init_overwrite) == (0, False, 0, False)
    assert trackers(config, "VI_1") == [
        FileTracker("file:maint", 0, False),
        FileTracker("file:prio", 3, False),
    ]
    config = load_text(FILES % "[prio]")
    assert trackers(config, "VI_1") == [FileTracker("file:prio", -10, True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FILES % "[mant]", "no vrrp_track_files entry named 'mant': did you mean 'maint'?"),
        (FILES % "[maint, maint]", "track file 'maint' is tracked twice"),
        (
            FILES.replace("/run/lvsha/prio", "prio") % "[]",
            "'prio' is not an absolute path: write it from / (e.g. /run/lvsha/prio)",
        ),
        (FILES.replace("/run/lvsha/prio", "/run/lvsha/") % "[]", "does not name a file"),
        (FILES.replace("weight: -10", "weight: -255") % "[]", "must be at least -254, got -255"),
        (FILES % "[{file: prio, weight: 255}]", "must be at most 254, got 255"),
        (
            FILES.replace("init: 0", "init_overwrite: true") % "[]",
            "init_overwrite writes `init` over the file at start-up: set init",
        ),
    ],
)
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert message in str(caught.value)
