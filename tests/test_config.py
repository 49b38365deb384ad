import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tracker import config
from tracker.backends import REGISTRY, secrets, settings_class
from tracker.config import ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "tracker.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tracker.toml"
    p.write_text(text)
    return p


def test_example_config_is_valid_and_documents_the_defaults():
    cfg = load(EXAMPLE)
    defaults = config.Config()
    assert cfg.gps == defaults.gps
    assert cfg.storage == defaults.storage
    assert cfg.activity == defaults.activity
    assert cfg.log == defaults.log


def test_empty_file_gives_defaults(tmp_path):
    cfg = load(write(tmp_path, ""))
    assert cfg.gps.device == "/dev/serial0"
    assert cfg.gps.baudrate == 9600
    assert cfg.storage.path == Path("/var/lib/tracker/tracker.db")
    assert cfg.storage.commit_interval_s == 1.0
    assert cfg.activity.start == "auto"
    assert cfg.activity.resume_window_s == 1800
    rules = cfg.activity.rules()
    assert (rules.start_speed_mps, rules.max_hdop, rules.start_after_s) == (1.5, 5.0, 10.0)
    assert (rules.idle_stop_s, rules.paused_points) == (900.0, "thin")
    assert cfg.activity.timezone == "UTC"


def test_activity_rules_by_mode_and_type(tmp_path):
    kayak = load(write(tmp_path, '[activity]\ntype = "kayaking"\n')).activity.rules()
    assert kayak.start_speed_mps == 0.5
    manual = load(write(tmp_path, '[activity]\nstart = "manual"\n')).activity.rules()
    assert manual.idle_stop_s is None  # manual gains the idle end only when it is set
    manual = load(write(tmp_path, '[activity]\nstart = "manual"\nidle_stop_s = 600\n'))
    assert manual.activity.rules().idle_stop_s == 600
    own = load(write(tmp_path, '[activity]\nstart_speed_mps = 2.5\nmax_hdop = 3\n'))
    assert (own.activity.rules().start_speed_mps, own.activity.rules().max_hdop) == (2.5, 3.0)


@pytest.mark.parametrize(
    ("title", "tz", "expected"),
    [
        ("{type} {start:%Y-%m-%d %H:%M}", "UTC", "cycling 2026-06-01 22:30"),
        ("{Type} {start:%Y-%m-%d %H:%M}", "Europe/Paris", "Cycling 2026-06-02 00:30"),
        ("Ride %Y-%m-%d %H:%M", "America/New_York", "Ride 2026-06-01 18:30"),
        ("Ride %Y-%m-%d %H:%M", "UTC", "Ride 2026-06-01 22:30"),
    ],
)
def test_titles_in_the_riders_time_zone(tmp_path, title, tz, expected):
    text = f'[activity]\ntitle = "{title}"\ntimezone = "{tz}"\n'
    cfg = load(write(tmp_path, text))
    t = datetime(2026, 6, 1, 22, 30, tzinfo=UTC).timestamp()
    assert cfg.activity.title_for(t) == expected


def test_values_are_typed(tmp_path):
    cfg = load(
        write(
            tmp_path,
            '[gps]\ndevice = "socket://127.0.0.1:10110"\nbaudrate = 38400\n'
            '[storage]\ncommit_interval_s = 2\n'
            '[activity]\ntype = "sea kayaking"\ntags = ["coast", " morning "]\n',
        )
    )
    assert cfg.gps.baudrate == 38400
    assert cfg.storage.commit_interval_s == 2.0
    assert isinstance(cfg.storage.commit_interval_s, float)
    assert cfg.activity.type == "sea kayaking"
    assert cfg.activity.tags == ("coast", "morning")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[gps]\nbaudrte = 9600\n", ["[gps] baudrte", "unknown key", "baudrate"]),
        ("[gsp]\n", ["unknown section [gsp]"]),
        ('[gps]\nbaudrate = "fast"\n', ["[gps] baudrate", "'fast'"]),
        ("[gps]\nbaudrate = 0\n", ["[gps] baudrate"]),
        ("[gps]\nbaudrate = true\n", ["[gps] baudrate"]),
        ('[activity]\ntype = "unicycling"\n', ["[activity] type", "'unicycling'", "cycling"]),
        ('[activity]\nprivacy = "friends"\n', ["[activity] privacy", "public, private"]),
        ('[activity]\nstart = "sometimes"\n', ["[activity] start", "auto, always, manual"]),
        ('[activity]\ntitle = "{kind} {start}"\n', ["[activity] title", "unknown field"]),
        ('[activity]\ntimezone = "Mars/Olympus"\n', ["[activity] timezone", "Mars/Olympus"]),
        ("[activity]\nidle_stop_s = 10\n", ["[activity] idle_stop_s", "60"]),
        ("[activity]\nmax_hdop = 0\n", ["[activity] max_hdop"]),
        ('[activity]\npaused_points = "some"\n', ["[activity] paused_points", "thin"]),
        ('[activity]\ntags = ["a,b"]\n', ["[activity] tags", "'a,b'"]),
        (f'[activity]\ntags = ["{"x" * 51}"]\n', ["[activity] tags", "50"]),
        (f'[activity]\ntitle = "{"x" * 101}"\n', ["[activity] title", "100"]),
        ('[storage]\nprune = "never"\n', ["[storage] prune", "drop_oldest"]),
        ("[storage]\ncommit_interval_s = -1\n", ["[storage] commit_interval_s"]),
        ('[log]\nlevel = "chatty"\n', ["[log] level"]),
        ("gps = 3\n", ["[gps] must be a table"]),
    ],
)
def test_bad_values_name_the_key_in_one_line(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for name in names:
        assert name in message


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[gps\n"))


def test_title_fills_gps_time_fields():
    a = config.ActivityConfig(title="Ride %Y-%m-%d %H:%M")
    assert a.title_for(1_780_000_000.5) == "Ride 2026-05-28 20:26"


def test_mapmytracks_absent_means_no_sender(tmp_path):
    assert load(write(tmp_path, "")).mapmytracks is None


def test_mapmytracks_defaults_and_password_not_in_repr(tmp_path):
    cfg = load(write(tmp_path, '[mapmytracks]\nusername = "rider"\npassword = "s3cret"\n'))
    m = cfg.mapmytracks
    assert m.url == "https://www.mapmytracks.com/api/"
    assert (m.batch_max_points, m.interval_s, m.offline_upload) == (100, 5.0, "gpx")
    assert (m.backoff_max_s, m.min_point_interval_s, m.enabled) == (300.0, 1.0, True)
    assert "s3cret" not in repr(cfg)


def test_mapmytracks_password_from_file_or_systemd_credential(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load(write(tmp_path, '[mapmytracks]\nusername = "r"\npassword_file = "/etc/pw"\n'))
    assert cfg.mapmytracks.password_file == Path("/etc/pw")
    (tmp_path / "mapmytracks-password").write_text("x\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load(write(tmp_path, '[mapmytracks]\nusername = "r"\n')).mapmytracks.username == "r"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[mapmytracks]\npassword = "p"\n', ["[mapmytracks] username", "missing"]),
        ('[mapmytracks]\nusername = "r"\n', ["[mapmytracks] password", "mapmytracks-password"]),
        ('[mapmytracks]\nusername = "r"\npassword = "p"\nurl = "ftp://x"\n',
         ["[mapmytracks] url"]),
        ('[mapmytracks]\nusername = "r"\npassword = "p"\noffline_upload = "csv"\n',
         ["[mapmytracks] offline_upload", "gpx, off"]),
        ('[mapmytracks]\nusername = "r"\npassword = "p"\nmin_point_interval_s = 0.5\n',
         ["[mapmytracks] min_point_interval_s"]),
        ('[mapmytracks]\nusername = "r"\npassword = "p"\nenabled = "yes"\n',
         ["[mapmytracks] enabled"]),
        ('[mapmytracks]\nusername = "r"\npassword = "p"\nbatch_max_points = 0\n',
         ["[mapmytracks] batch_max_points"]),
    ],
)  # fmt: skip
def test_mapmytracks_bad_values_name_the_key(tmp_path, monkeypatch, text, names):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for name in names:
        assert name in message


def test_mapmytracks_disabled_needs_no_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load(write(tmp_path, "[mapmytracks]\nenabled = false\n"))
    assert cfg.mapmytracks is not None and not cfg.mapmytracks.enabled


def test_gpsr_defaults_and_token_not_in_repr(tmp_path):
    assert load(write(tmp_path, "")).gpsr is None
    cfg = load(write(tmp_path, '[gpsr]\nurl = "https://gpsr.example/"\ntoken = "t0ken"\n'))
    g = cfg.gpsr
    assert (g.enabled, g.millis, g.compress_stationary, g.tag, g.uere_m) == (
        True, False, False, None, 5.0)  # fmt: skip
    assert (g.batch_max_points, g.interval_s, g.backoff_max_s) == (100, 5.0, 300.0)
    assert "t0ken" not in repr(cfg)
    cfg = load(write(tmp_path, '[gpsr]\nurl = "http://h/"\ntoken = "t"\ntag = ""\nmillis = true\n'))
    assert cfg.gpsr.tag == "" and cfg.gpsr.millis


def test_gpsr_token_from_file_or_systemd_credential(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load(write(tmp_path, '[gpsr]\nurl = "https://h/"\ntoken_file = "/etc/tok"\n'))
    assert cfg.gpsr.token_file == Path("/etc/tok")
    (tmp_path / "gpsr-token").write_text("x\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load(write(tmp_path, '[gpsr]\nurl = "https://h/"\n')).gpsr.url == "https://h/"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[gpsr]\ntoken = "t"\n', ["[gpsr] url", "missing"]),
        ('[gpsr]\nurl = "https://h/"\n', ["[gpsr] token", "gpsr-token"]),
        ('[gpsr]\nurl = "ftp://h/"\ntoken = "t"\n', ["[gpsr] url"]),
        ('[gpsr]\nurl = "https://h/"\ntoken = "t"\nmillis = 1\n', ["[gpsr] millis"]),
        ('[gpsr]\nurl = "https://h/"\ntoken = "t"\nuere_m = 0\n', ["[gpsr] uere_m"]),
        ('[gpsr]\nurl = "https://h/"\ntoken = "t"\ntag = 5\n', ["[gpsr] tag"]),
        ('[gpsr]\nurl = "https://h/"\ntoken = "t"\nbatch_max_points = -1\n',
         ["[gpsr] batch_max_points"]),
        ('[gpsr]\nurl = "https://h/"\ntoken = "t"\npassword = "p"\n',
         ["[gpsr] password", "unknown key"]),
    ],
)  # fmt: skip
def test_gpsr_bad_values_name_the_key(tmp_path, monkeypatch, text, names):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for name in names:
        assert name in message


def test_gpsr_disabled_needs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load(write(tmp_path, "[gpsr]\nenabled = false\n"))
    assert cfg.gpsr is not None and not cfg.gpsr.enabled


@pytest.mark.parametrize("name", ["button", "time", "share"])
def test_the_commented_examples_of_optional_sections_parse(name):
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(f"#[{name}]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[1:])
    section = getattr(config.parse(tomllib.loads("\n".join(block))), name)
    assert section is not None and section == type(section)(**vars(section))


def commented(header: str) -> dict:
    """The example's commented-out block that starts at `header`, uncommented: `#key = v`
    lines are config, `# text` lines are prose; a line without `#` ends the block."""
    lines = EXAMPLE.read_text().splitlines()
    block = []
    for line in lines[lines.index(header):]:
        if not line.startswith("#"):
            break
        if not line.startswith("# ") and line != "#":
            block.append(line[1:])
    return tomllib.loads("\n".join(block))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_commented_backend_examples_parse(name):
    """Every registered backend has its commented example, and it parses. An empty inline
    secret there only shows the key (the example's `<key>_file` is what it uses)."""
    doc = commented(f"#[{name}]")
    key = (settings_class(name).SECRET or ("",))[0]
    if doc[name].get(key) == "":
        del doc[name][key]
    cfg = config.parse(doc)
    assert cfg.backends[name].url.startswith(("http://", "https://", "mqtt://", "mqtts://"))


def test_the_commented_inputs_example_parses():
    cfg = config.parse(commented("#[[inputs]]"))
    assert [i.name for i in cfg.inputs] == ["mux", "sounder"]


def test_an_inline_secret_in_a_world_readable_file_is_named_with_its_chmod(tmp_path):
    from tracker.config import exposed_secrets

    path = write(tmp_path, '[mapmytracks]\nusername = "r"\npassword = "hunter2"\n')
    path.chmod(0o644)
    warning = exposed_secrets(load(path))
    assert warning and str(path) in warning and "[mapmytracks] password" in warning
    assert f"chmod 640 {path}" in warning and "hunter2" not in warning
    path.chmod(0o640)
    assert exposed_secrets(load(path)) is None
    path.chmod(0o644)
    other = write(tmp_path, '[mapmytracks]\nusername = "r"\npassword_file = "/etc/pw"\n')
    assert exposed_secrets(load(other)) is None  # no secret in the file itself


# --- [[inputs]], [share], gpsd:// (issue 15) ---------------------------------------------------


def test_inputs_share_and_gpsd_parse(tmp_path):
    cfg = load(write(tmp_path, """
[gps]
device = "gpsd://127.0.0.1:2947"

[[inputs]]
name = "mux"
url = "tcp://192.168.1.10:10110"

[[inputs]]
name = "sounder"
url = "/dev/ttyUSB1"
baudrate = 38400
reconnect_max_s = 5

[share]
nmea_tcp = "0.0.0.0:10110"
"""))
    assert cfg.gps.device == "gpsd://127.0.0.1:2947"
    assert [(i.name, i.url, i.baudrate, i.reconnect_max_s) for i in cfg.inputs] == [
        ("mux", "tcp://192.168.1.10:10110", 4800, 30.0),
        ("sounder", "/dev/ttyUSB1", 38400, 5.0),
    ]
    assert cfg.share.nmea_tcp == "0.0.0.0:10110"


def test_inputs_and_share_are_off_by_default(tmp_path):
    cfg = load(write(tmp_path, ""))
    assert cfg.inputs == () and cfg.share.nmea_tcp is None
    assert load(write(tmp_path, "[share]\n")).share.nmea_tcp is None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[[inputs]]\nname = "a"\nurl = "tcp://:10110"\n', ["inputs[1].url:", "with a host"]),
        ('[[inputs]]\nname = "a"\nurl = "udp://10110"\n', ["inputs[1].url:", "udp://host:port"]),
        ('[[inputs]]\nname = "a"\nurl = "gpsd://h:2947"\n', ["inputs[1].url:", "[gps] device"]),
        ('[[inputs]]\nname = "a"\nurl = "/dev/x"\n[[inputs]]\nurl = "/dev/y"\n',
         ["inputs[2].name: missing"]),
        ('[[inputs]]\nname = "a"\n', ["inputs[1].url: missing"]),
        ('[[inputs]]\nname = "a"\nurl = "/dev/x"\nbaud = 4800\n',
         ["inputs[1].baud: unknown key", "baudrate"]),
        ('[[inputs]]\nname = "a"\nurl = "/dev/x"\nbaudrate = true\n', ["inputs[1].baudrate:"]),
        ('[[inputs]]\nname = "a b"\nurl = "/dev/x"\n', ["inputs[1].name:", "letters"]),
        ('[[inputs]]\nname = "a"\nurl = "/dev/x"\n[[inputs]]\nname = "a"\nurl = "/dev/y"\n',
         ["inputs[2].name:", "used twice"]),
        ("inputs = 3\n", ["inputs must be an array of tables"]),
        ('[share]\nnmea_tcp = "10110"\n', ["[share] nmea_tcp", "host:port"]),
        ('[share]\nnmea_udp = "x:1"\n', ["[share] nmea_udp: unknown key", "nmea_tcp"]),
        ('[gps]\ndevice = "gpsd://:2947"\n', ["[gps] device", "gpsd://host:port"]),
    ],
)  # fmt: skip
def test_inputs_and_share_errors_name_the_key_in_one_line(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for name in names:
        assert name in message, message


# A secret written with the wrong type may still be the real secret: the error goes to the
# journal and to whoever reads the screen, so it names the key and the type, never the value.
# Every secret the registry knows (tracker/backends.py), with what else its section needs.
SECRET_CONTEXT = {
    "web": 'listen = "0.0.0.0:8080"\n',
    "mapmytracks": 'username = "rider"\n',
    "mqtt": 'url = "mqtt://127.0.0.1:1883"\nusername = "unit"\n',
}
SECRET_KEYS = [(s.section, s.key, SECRET_CONTEXT.get(s.section, "")) for s in secrets()]
SECRET_VALUES = [
    ("8675309421", "8675309421"),
    ("86753.09421", "86753.09"),
    ("true", "true"),
    ('["s3cr3t-in-a-list"]', "s3cr3t"),
    ('{ value = "s3cr3t-in-a-table" }', "s3cr3t"),
    ("2031-04-05T06:07:08Z", "2031"),
    ('""', None),
]


@pytest.mark.parametrize(("section", "key", "rest"), SECRET_KEYS)
@pytest.mark.parametrize(("value", "fragment"), SECRET_VALUES)
def test_a_secret_of_any_type_is_never_echoed(tmp_path, section, key, rest, value, fragment):
    text = f"[{section}]\n{rest}{key} = {value}\n"
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and f"{key}:" in message
    if fragment is not None:
        assert fragment not in message


@pytest.mark.parametrize(
    ("section", "rest", "url"),
    [
        ("gpsr", 'token = "t"\n', "ftp://rider:s3cr3t@example.org/"),
        ("mqtt", "", "mqtt://unit:s3cr3t@127.0.0.1:1883"),
    ],
)
def test_a_password_inside_a_url_is_not_echoed(tmp_path, section, rest, url):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, f'[{section}]\n{rest}url = "{url}"\n'))
    assert "url:" in str(err.value) and "s3cr3t" not in str(err.value)
    assert "***@" in str(err.value)
