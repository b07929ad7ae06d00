import dataclasses

import pytest

from core.settings import Settings
from quire.cli import build_parser


def test_every_field_is_documented_and_a_flag():
    parser = build_parser()
    help_text = parser.format_help()
    for f in dataclasses.fields(Settings):
        assert len(f.metadata["help"]) > 10, f.name
        assert "--" + f.name.replace("_", "-") in help_text, f.name


def test_env_then_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("QUIRE_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("QUIRE_PORT", "9000")
    monkeypatch.setenv("QUIRE_TEMPERATURE", "0.5")
    s = Settings.from_env()
    assert s.home == tmp_path / "h" and s.port == 9000 and s.temperature == 0.5
    args = build_parser().parse_args(["--port", "9100", "sessions"])
    s = Settings.from_args(args)
    assert s.port == 9100 and s.home == tmp_path / "h"


def test_flag_before_and_after_subcommand():
    parser = build_parser()
    assert Settings.from_args(parser.parse_args(["--runtime", "llamacpp", "sessions"])).runtime == "llamacpp"
    assert Settings.from_args(parser.parse_args(["sessions", "--runtime", "openai"])).runtime == "openai"


def test_listens_on_loopback_by_default():
    assert Settings().host == "127.0.0.1"


def test_bad_values_name_the_flag():
    with pytest.raises(ValueError, match="--port"):
        Settings(port=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--runtime", "nope"])
