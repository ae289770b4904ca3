"""Config loading: typed values, defaults, secrets, and clear errors naming file, key and expectation."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from pvcharge.cli import main
from pvcharge.config import Config, load_config, parse_config, to_dict
from pvcharge.errors import ConfigError
from pvcharge.settings import Secret

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
meter: {type: huawei, host: 192.0.2.10}
charger: {type: warp, url: "http://192.0.2.20"}
"""


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/pvcharge/config.yaml", environ=environ or {})
    return str(err.value)


def test_minimal_config_fills_documented_defaults() -> None:
    cfg = parse_config(MINIMAL, environ={})
    assert cfg.meter.type == "huawei"
    assert cfg.meter.settings.host == "192.0.2.10"
    assert cfg.meter.settings.port == 502
    assert cfg.charger.type == "warp"
    assert cfg.charge_point.max_current_a == 16
    assert cfg.charge_point.min_current_a == 6
    assert cfg.charge_point.phases == 3
    assert cfg.site.voltage_v == 230
    assert cfg.control.mode == "pv"
    assert cfg.control.interval_s == 5


def test_config_objects_are_frozen() -> None:
    cfg = parse_config(MINIMAL, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.control.mode = "fast"  # type: ignore[misc]


def test_missing_key_names_the_key_and_what_it_is() -> None:
    msg = error_of("meter: {type: huawei}\ncharger: {type: warp, url: http://x}\n")
    assert msg.startswith("/etc/pvcharge/config.yaml: meter.host: missing key")


def test_missing_section() -> None:
    assert "charger: missing section" in error_of("meter: {type: huawei, host: h}\n")


def test_wrong_type_names_key_expected_and_got() -> None:
    msg = error_of(MINIMAL + "control: {interval_s: fast}\n")
    assert "control.interval_s: expected a number in s, got a string 'fast'" in msg


def test_boolean_is_not_a_number() -> None:
    assert "charger.max_current_a: expected a number in A" in error_of(
        MINIMAL.replace('url: "http://192.0.2.20"', 'url: "http://192.0.2.20", max_current_a: true')
    )


def test_unknown_key_is_an_error_with_a_hint() -> None:
    msg = error_of(MINIMAL.replace("host: 192.0.2.10", "host: 192.0.2.10, prot: 6607"))
    assert "meter.prot: unknown key (did you mean 'port'?)" in msg


def test_unknown_section_and_unknown_type() -> None:
    assert "contrl: unknown key (did you mean 'control'?)" in error_of(MINIMAL + "contrl: {}\n")
    assert "meter.type: unknown meter type 'sma'; expected one of: alphaess, huawei, senec" in error_of(
        MINIMAL.replace("type: huawei", "type: sma")
    )


def test_out_of_range_and_bad_choice() -> None:
    assert "control.interval_s: expected a value within 1–300 s, got 0" in error_of(
        MINIMAL + "control: {interval_s: 0}\n"
    )
    assert "control.mode: expected one of 'off', 'pv', 'minpv', 'fast', got 'turbo'" in error_of(
        MINIMAL + "control: {mode: turbo}\n"
    )
    assert "charger.phases: expected one of 1, 3, 'auto', got 2" in error_of(
        MINIMAL.replace('url: "http://192.0.2.20"', 'url: "http://192.0.2.20", phases: 2')
    )


def test_a_bound_on_one_side_is_named_not_crashed_on() -> None:
    # tariff.grid_price_per_kwh has min=0 and no max: the message must not format the missing max
    assert "tariff.grid_price_per_kwh: expected a value of at least 0, got -0.1" in error_of(
        MINIMAL + "tariff: {grid_price_per_kwh: -0.1}\n"
    )


def test_cloud_filter_takes_a_preset_or_seconds() -> None:
    assert parse_config(MINIMAL + "control: {cloud_filter: strong}\n").control.window_s == 480
    assert parse_config(MINIMAL + "control: {cloud_filter: 300}\n").control.window_s == 300
    msg = error_of(MINIMAL + "control: {cloud_filter: stormy}\n")
    assert "control.cloud_filter: expected one of 'off', 'weak', 'medium', 'strong' or a number in s" in msg
    assert "control.cloud_filter: a window of 2 s is shorter than interval_s (5 s)" in error_of(
        MINIMAL + "control: {cloud_filter: 2}\n"
    )


def test_max_age_must_cover_a_slow_meter() -> None:
    text = (
        "meter: {type: alphaess, sys_sn: AL1, app_id: a, app_secret: s, poll_interval_s: 60}\n"
        "charger: {type: warp, url: 'http://192.0.2.20'}\n"
    )
    msg = error_of(text)
    assert "control.max_age_s: must be >= the meter's update interval (60 s), got 30 s" in msg
    assert parse_config(text + "control: {max_age_s: 90}\n", environ={}).control.max_age_s == 90


def test_cross_field_error_names_the_key() -> None:
    msg = error_of(
        MINIMAL.replace(
            'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", min_current_a: 12, max_current_a: 10'
        )
    )
    assert "charger.min_current_a: must be <= max_current_a (10 A), got 12 A" in msg


def test_bad_yaml_gives_line_and_column() -> None:
    msg = error_of("meter: {type: huawei\ncharger: [\n")
    assert msg.startswith("/etc/pvcharge/config.yaml: invalid YAML: line ")


def test_top_level_must_be_a_mapping() -> None:
    assert "expected a mapping of sections at the top, got a list" in error_of("- a\n- b\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: cannot read config file" in str(err.value)


def test_secret_inline_env_and_file(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", username: admin, password: "${WARP_PW}"'
    )
    cfg = parse_config(text, str(tmp_path / "c.yaml"), environ={"WARP_PW": "s3cret-env"})
    assert isinstance(cfg.charger.settings.password, Secret)
    assert cfg.charger.settings.password.reveal() == "s3cret-env"
    assert "s3cret-env" not in repr(cfg)

    (tmp_path / "warp.pw").write_text("s3cret-file\n")
    text = MINIMAL.replace(
        'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", username: admin, password_file: warp.pw'
    )
    cfg = parse_config(text, str(tmp_path / "c.yaml"), environ={})
    assert cfg.charger.settings.password.reveal() == "s3cret-file"
    assert to_dict(cfg)["charger"]["password"] == "***"


def test_secret_errors() -> None:
    assert "environment variable WARP_PW is not set" in error_of(
        MINIMAL.replace('url: "http://192.0.2.20"', 'url: "http://192.0.2.20", password: "${WARP_PW}"')
    )
    assert "charger.password_file: give either 'password' or 'password_file', not both" in error_of(
        MINIMAL.replace(
            'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", password: x, password_file: /x'
        )
    )
    assert "charger.password_file: cannot read secret file" in error_of(
        MINIMAL.replace(
            'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", password_file: /nonexistent/pw'
        )
    )


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    assert isinstance(cfg, Config)


def _documented_keys(cfg_cls: type, section: str) -> list[str]:
    return [f"{section}.{f.name}" for f in dataclasses.fields(cfg_cls)]


def test_example_config_documents_every_key_with_default_and_unit() -> None:
    """Every settings field of every section and every driver appears in config.example.yaml, with its
    default value and unit in the comment on the same line."""
    import importlib

    from pvcharge.chargers import CHARGER_TYPES
    from pvcharge.config import LogConfig
    from pvcharge.control.config import ChargePoint, Circuit, ControlConfig, SiteConfig
    from pvcharge.control.vehicle import Vehicle
    from pvcharge.loadpoints_config import LoadpointSettings
    from pvcharge.meters import METER_TYPES

    text = (ROOT / "config.example.yaml").read_text()
    blocks = dict(re.findall(r"^(\w+):\n((?:[ #].*\n|\n)*)", text, re.MULTILINE))

    def driver_block(section: str, kind: str) -> str:
        """The lines of one driver inside a section: from its ``type: KIND`` line (maybe commented out)
        to the next ``type:`` line."""
        parts = re.split(r"^(?=\s*#?\s*type: )", blocks.get(section, ""), flags=re.MULTILINE)
        return next((p for p in parts if re.match(rf"\s*#?\s*type: {kind}\b", p)), "")

    from pvcharge.config import ApiConfig, MqttConfig, SessionsConfig, StateConfig, TariffConfig

    mqtt_block = re.search(r"^# mqtt:.*\n((?:#.*\n)*)", text, re.MULTILINE)
    loadpoints_block = re.search(r"^# loadpoints:.*\n((?:#.*\n)*)", text, re.MULTILINE)
    loadpoints = loadpoints_block.group(0) if loadpoints_block else ""
    classes = [
        (ApiConfig, blocks.get("api", "")),
        (MqttConfig, mqtt_block.group(0) if mqtt_block else ""),
        (StateConfig, blocks.get("state", "")),
        (SessionsConfig, blocks.get("sessions", "")),
        (TariffConfig, blocks.get("tariff", "")),
        (SiteConfig, blocks.get("site", "")),
        (ChargePoint, blocks.get("charger", "")),
        (ControlConfig, blocks.get("control", "")),
        (LogConfig, blocks.get("log", "")),
        (Circuit, blocks.get("site", "")),
        (LoadpointSettings, loadpoints),
        (Vehicle, loadpoints),
    ]
    classes += [(importlib.import_module(m).Config, driver_block("meter", k)) for k, m in METER_TYPES.items()]
    classes += [
        (importlib.import_module(m).Config, driver_block("charger", k)) for k, m in CHARGER_TYPES.items()
    ]
    missing = []
    for cls, block in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            line = re.search(rf"^\s*#?\s*(?:- )?{f.name}:.*$", block, re.MULTILINE)
            if line is None:
                missing.append(f"{cls.__module__}.{cls.__name__}.{f.name}: not in the example")
                continue
            unit = f.metadata.get("unit")
            if unit and f"[{unit}]" not in line.group(0):
                missing.append(f"{f.name}: unit [{unit}] not on its line")
            if f.default is not dataclasses.MISSING and f.default is not None and hints[f.name] is not Secret:
                default = f.default
                shown = (
                    f"{default:g}"
                    if isinstance(default, float)
                    else str(default).lower()
                    if isinstance(default, bool)
                    else str(default)
                )
                if f"default {shown}" not in line.group(0):
                    missing.append(f"{f.name}: 'default {shown}' not on its line")
    assert not missing, "\n".join(missing)


def test_check_config_prints_effective_config_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        MINIMAL.replace(
            'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", username: admin, password: hunter2-secret'
        )
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2-secret" not in out
    assert "password: '***'" in out
    assert "max_current_a: 16.0" in out


def test_check_config_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "control: {min_off_s: -1}\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: control.min_off_s: expected a value within 0–7200 s, got -1" in err


def test_a_secret_in_a_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "pvcharge.yaml"
    config.write_text(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', username: admin, password: hunter2-secret}\n"
    )
    config.chmod(0o644)
    (warning,) = load_config(config).warnings
    assert str(config) in warning and "charger.password" in warning and "0644" in warning
    assert "hunter2-secret" not in warning
    config.chmod(0o640)
    assert load_config(config).warnings == ()
    # the secret in its own file: that file is checked, the config file is not
    secret = tmp_path / "warp-password"
    secret.write_text("hunter2-secret\n")
    secret.chmod(0o604)
    config.write_text(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', username: admin, password_file: warp-password}\n"
    )
    config.chmod(0o644)
    (warning,) = load_config(config).warnings
    assert str(secret) in warning and "charger.password_file" in warning
    secret.chmod(0o600)
    assert load_config(config).warnings == ()
    # a ${ENV} reference is not a secret written in the file
    config.write_text(
        "meter: {type: huawei, host: 127.0.0.1}\n"
        "charger: {type: warp, url: 'http://127.0.0.1', username: admin, password: '${WARP_PW}'}\n"
    )
    assert load_config(config, environ={"WARP_PW": "hunter2-secret"}).warnings == ()


def test_api_off_loopback_needs_a_token_and_mqtt_is_checked() -> None:
    msg = error_of(MINIMAL + "api: {listen: 0.0.0.0}\n")
    assert msg.startswith("/etc/pvcharge/config.yaml: api.token: required when listen is not a loopback")
    cfg = parse_config(MINIMAL + "api: {listen: 0.0.0.0, token: t0ken}\n")
    assert cfg.api.token is not None and to_dict(cfg)["api"]["token"] == "***"
    assert parse_config(MINIMAL + "api: {listen: '::1'}\n").api.token is None  # loopback: no token needed
    assert "api.token: empty" in error_of(MINIMAL + "api: {token: '  '}\n")
    assert parse_config(MINIMAL).mqtt is None  # no section: no MQTT
    assert "mqtt.host: missing key" in error_of(MINIMAL + "mqtt: {port: 1883}\n")
    assert "mqtt.password: given without username" in error_of(MINIMAL + "mqtt: {host: h, password: x}\n")
    assert "mqtt.prefix: expected a topic prefix" in error_of(MINIMAL + "mqtt: {host: h, prefix: 'a/#'}\n")
    cfg = parse_config(MINIMAL + "mqtt: {host: 127.0.0.1, username: u, password: pw}\n")
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883 and to_dict(cfg)["mqtt"]["password"] == "***"


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("control: {mode: off}", "mode", "off"),
        ("control: {cloud_filter: off}", "cloud_filter", "off"),
        ("control: {cloud_filter: OFF}", "cloud_filter", None),  # only 'off' is a preset: an error
    ],
)
def test_off_unquoted_is_the_word_off_not_a_boolean(line: str, key: str, expected: str | None) -> None:
    """YAML 1.1 reads ``off`` as False; the README and config.example.yaml write ``mode: off``."""
    if expected is None:
        assert "control.cloud_filter: expected" in error_of(MINIMAL + line + "\n")
        return
    config = parse_config(MINIMAL + line + "\n", "c.yaml", environ={})
    assert getattr(config.control, key) == expected


def test_boolean_settings_take_true_false_and_the_yaml_1_1_words() -> None:
    for word, value in (("true", True), ("false", False), ("yes", True), ("off", False), ("On", True)):
        config = parse_config(MINIMAL + f"control: {{battery_to_car: {word}}}\n", "c.yaml", environ={})
        assert config.control.battery_to_car is value, word
    assert "control.battery_to_car: expected true or false, got a string 'maybe'" in error_of(
        MINIMAL + "control: {battery_to_car: maybe}\n"
    )


def test_a_key_given_twice_is_an_error_naming_both_lines() -> None:
    text = "meter: {type: huawei, host: 192.0.2.10}\ncharger:\n  type: warp\n  url: http://192.0.2.20\n"
    text += "  max_current_a: 16\n  max_current_a: 32\n"
    message = error_of(text)
    assert "/etc/pvcharge/config.yaml: charger.max_current_a: given twice, on line 5 and on line 6" in message


def test_a_section_given_twice_is_an_error() -> None:
    text = MINIMAL + "control: {mode: pv}\nsite: {voltage_v: 230}\ncontrol: {mode: fast}\n"
    assert "control: given twice, on line 4 and on line 6" in error_of(text)


def test_a_config_file_that_is_not_utf8_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Latin-1 from an old editor: exit 2 with the file and the byte, never a traceback (exit 1 would
    make systemd restart it every 10 s forever)."""
    path = tmp_path / "c.yaml"
    path.write_bytes(MINIMAL.encode() + "# Garage, Süd\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 0xfc on line 4"):
        load_config(path)
    assert main(["check-config", str(path)]) == 2
    assert f"{path}: not UTF-8 text" in capsys.readouterr().err


def test_check_config_refuses_what_run_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """phases: auto on a charger that cannot switch phases: run refuses it, so check-config must not say
    "valid" (one set of checks, made with the drivers built as run builds them)."""
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL.replace('url: "http://192.0.2.20"', 'url: "http://192.0.2.20", phases: auto'))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: charger.phases: auto needs a charger that can switch between 1 and 3 phases" in err
    path.write_text(
        MINIMAL.replace(
            'url: "http://192.0.2.20"', 'url: "http://192.0.2.20", phases: auto, phase_switching: true'
        )
    )
    assert main(["check-config", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_config_takes_config_like_every_other_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    assert main(["check-config", "--config", str(path)]) == 0
    assert f"# {path}: valid" in capsys.readouterr().out
    assert main(["check-config"]) == 2
    assert "name one config file" in capsys.readouterr().err
