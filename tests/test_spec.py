"""The OCI config model: runc's defaults, round-tripping, and errors that name the JSON path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aioruntime.errors import ConfigError
from aioruntime.spec.resources import DeviceRule, Resources
from aioruntime.spec import (
    Capabilities,
    ConsoleSize,
    Device,
    Hook,
    IDMapping,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
    User,
    default_spec,
    load,
    loads,
    rootless_spec,
)

Edit = Callable[[dict[str, Any]], object]


def edited(edit: Edit) -> dict[str, Any]:
    d = default_spec()
    edit(d)
    return d


# --- runc's default specs -------------------------------------------------------------


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
@pytest.mark.parametrize("flags, ours", [([], default_spec), (["--rootless"], rootless_spec)])
def test_default_specs_match_runc(tmp_path: Path, flags: list[str], ours: Callable[[], dict[str, Any]]) -> None:
    subprocess.run(["runc", "spec", *flags], cwd=tmp_path, check=True)
    text = (tmp_path / "config.json").read_text()
    assert ours() == json.loads(text)
    assert json.dumps(ours(), indent="\t") == text  # same key order, byte for byte


def test_default_spec_shape() -> None:
    d = default_spec()
    assert list(d) == ["ociVersion", "process", "root", "hostname", "mounts", "linux"]
    assert list(d["process"]) == [
        "terminal",
        "user",
        "args",
        "env",
        "cwd",
        "capabilities",
        "rlimits",
        "noNewPrivileges",
    ]
    assert "inheritable" not in d["process"]["capabilities"]
    assert [m["destination"] for m in d["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    ]  # fmt: skip
    assert [ns["type"] for ns in d["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]
    assert list(d["linux"]) == ["resources", "namespaces", "maskedPaths", "readonlyPaths"]
    d["process"]["args"].append("-x")
    assert default_spec()["process"]["args"] == ["sh"]  # each call is a fresh copy


def test_rootless_spec_shape() -> None:
    d = rootless_spec()
    linux = d["linux"]
    assert list(linux) == ["uidMappings", "gidMappings", "namespaces", "maskedPaths", "readonlyPaths"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "user"]
    mounts = {m["destination"]: m for m in d["mounts"]}
    assert mounts["/sys"]["type"] == "none" and mounts["/sys"]["options"][0] == "rbind"
    assert "gid=5" not in mounts["/dev/pts"]["options"]


# --- parsing valid configs ------------------------------------------------------------


@pytest.mark.parametrize("make", [default_spec, rootless_spec])
def test_round_trip(make: Callable[[], dict[str, Any]]) -> None:
    assert Spec.from_dict(make()).to_dict() == make()


def test_default_spec_model() -> None:
    spec = Spec.from_dict(default_spec())
    caps = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert spec.oci_version == "1.0.2-dev"
    assert spec.root == Root("rootfs", readonly=True)
    assert spec.process == Process(
        args=("sh",),
        cwd="/",
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"),
        user=User(0, 0),
        terminal=True,
        capabilities=Capabilities(bounding=caps, effective=caps, permitted=caps, ambient=caps),
        rlimits=(Rlimit("RLIMIT_NOFILE", 1024, 1024),),
        no_new_privileges=True,
    )
    assert spec.hostname == "runc"
    assert spec.mounts[0] == Mount("/proc", "proc", "proc")
    assert spec.mounts[3] == Mount(
        "/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")
    )
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert spec.linux.namespace("uts") == Namespace("uts")
    assert spec.linux.namespace("user") is None
    assert spec.linux.resources == Resources(devices=(DeviceRule(allow=False, type="a", access="rwm"),))
    assert spec.linux.masked_paths[0] == "/proc/acpi"
    assert spec.linux.readonly_paths[-1] == "/proc/sysrq-trigger"
    assert spec.annotations == {} and spec.linux.sysctl == {}


def test_minimal_config_gets_spec_defaults() -> None:
    spec = Spec.from_dict({"ociVersion": "1.0.2"})
    assert (spec.root, spec.process, spec.hostname, spec.mounts) == (None, None, None, ())
    assert spec.linux.namespaces == () and spec.hooks.prestart == ()
    process = Spec.from_dict({"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/"}}).process
    assert process == Process(args=("true",), cwd="/")
    assert process.user == User(uid=0, gid=0, umask=None, additional_gids=())


def test_full_config() -> None:
    d = rootless_spec()
    d["process"].update(
        consoleSize={"height": 24, "width": 80},
        user={"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 6]},
        oomScoreAdj=-500,
        apparmorProfile="unconfined",
    )
    d["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}],
        devices=[
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0},
            {"path": "/dev/fifo", "type": "p"},
        ],
        sysctl={"net.ipv4.ip_forward": "1"},
        rootfsPropagation="",
        cgroupsPath="/aioruntime/test",
        seccomp={"defaultAction": "SCMP_ACT_ALLOW"},
    )
    d["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid"
    d["linux"]["namespaces"][1]["path"] = ""
    d["hooks"] = {"createRuntime": [{"path": "/bin/true", "args": ["true", "x"], "env": ["A=1"], "timeout": 5}]}
    d["annotations"] = {"org.example.key": "value"}
    d["org.example.extension"] = {"anything": [1, 2.5, None]}
    spec = Spec.from_dict(d)
    assert spec.process is not None
    assert spec.process.console_size == ConsoleSize(height=24, width=80)
    assert spec.process.user == User(1000, 1000, 0o22, (5, 6))
    assert spec.process.oom_score_adj == -500
    assert spec.linux.uid_mappings == (IDMapping(container_id=0, host_id=100000, size=65536),)
    assert spec.linux.devices == (
        Device("/dev/fuse", "c", 10, 229, file_mode=0o666, uid=0, gid=0),
        Device("/dev/fifo", "p", 0, 0),
    )
    assert spec.linux.sysctl == {"net.ipv4.ip_forward": "1"}
    assert spec.linux.rootfs_propagation is None
    assert spec.linux.cgroups_path == "/aioruntime/test"
    assert spec.linux.seccomp == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert spec.linux.namespace("pid") == Namespace("pid", "/proc/1/ns/pid")
    assert spec.linux.namespace("ipc") == Namespace("ipc", None)
    assert spec.hooks.create_runtime == (Hook("/bin/true", ("true", "x"), ("A=1",), 5),)
    assert spec.annotations == {"org.example.key": "value"}
    assert spec.to_dict() == d


def test_null_reads_as_absent_for_optional_fields() -> None:
    spec = Spec.from_dict({"ociVersion": "1.0.2", "hostname": None, "mounts": None, "linux": {"namespaces": None}})
    assert spec.hostname is None and spec.mounts == () and spec.linux.namespaces == ()


def test_spec_is_isolated_from_the_dicts_around_it() -> None:
    d = default_spec()
    spec = Spec.from_dict(d)
    d["process"]["args"].append("-x")
    out = spec.to_dict()
    assert out["process"]["args"] == ["sh"]
    out["mounts"].clear()
    assert spec.to_dict()["mounts"] == default_spec()["mounts"]


# --- invalid configs ------------------------------------------------------------------


def _set(*keys: str | int, value: Any) -> Edit:
    def edit(d: Any) -> None:
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value

    return edit


def _delete(*keys: str | int) -> Edit:
    def edit(d: Any) -> None:
        for key in keys[:-1]:
            d = d[key]
        del d[keys[-1]]

    return edit


def _append(*keys: str, value: Any) -> Edit:
    def edit(d: Any) -> None:
        for key in keys:
            d = d[key]
        d.append(value)

    return edit


def _userns(edit: Edit) -> Edit:
    """Start from a config with a user namespace and id mappings, as mapping cases need."""

    def wrapped(d: dict[str, Any]) -> None:
        d["linux"].update({k: v for k, v in rootless_spec()["linux"].items() if k.endswith(("Mappings", "namespaces"))})
        edit(d)

    return wrapped


def _no_uts(d: dict[str, Any]) -> None:
    d["linux"]["namespaces"] = [ns for ns in d["linux"]["namespaces"] if ns["type"] != "uts"]


BAD: list[tuple[str, Edit, str, str]] = [
    ("no version", _delete("ociVersion"), "ociVersion", "required but missing"),
    ("version type", _set("ociVersion", value=1), "ociVersion", "expected a string, got 1"),
    ("root type", _set("root", value="rootfs"), "root", 'expected an object, got "rootfs"'),
    ("root path empty", _set("root", "path", value=""), "root.path", "non-empty string"),
    ("root readonly", _set("root", "readonly", value="yes"), "root.readonly", "expected true or false"),
    ("args empty", _set("process", "args", value=[]), "process.args", "non-empty list of strings, got []"),
    ("args type", _set("process", "args", value=3), "process.args", "expected a list of strings, got 3"),
    ("args item", _set("process", "args", value=["sh", 3]), "process.args[1]", "got 3"),
    ("args nul", _set("process", "args", value=["s\0h"]), "process.args[0]", "without NUL"),
    ("cwd relative", _set("process", "cwd", value="tmp"), "process.cwd", 'absolute path, got "tmp"'),
    ("cwd missing", _delete("process", "cwd"), "process.cwd", "required"),
    ("env no =", _set("process", "env", 1, value="TERM"), "process.env[1]", 'NAME=value, got "TERM"'),
    ("uid negative", _set("process", "user", "uid", value=-1), "process.user.uid", "0 to 4294967295, got -1"),
    ("uid too big", _set("process", "user", "uid", value=2**32), "process.user.uid", "got 4294967296"),
    ("gid bool", _set("process", "user", "gid", value=True), "process.user.gid", "got true"),
    ("uid float", _set("process", "user", "uid", value=1.0), "process.user.uid", "got 1.0"),
    ("umask", _set("process", "user", "umask", value="022"), "process.user.umask", 'got "022"'),
    (
        "additional gids",
        _set("process", "user", "additionalGids", value=[1, "2"]),
        "process.user.additionalGids[1]",
        'got "2"',
    ),
    (
        "unknown capability",
        _set("process", "capabilities", "bounding", 1, value="CAP_FOO"),
        "process.capabilities.bounding[1]",
        'Linux capability name (CAP_CHOWN ... CAP_CHECKPOINT_RESTORE), got "CAP_FOO"',
    ),
    (
        "capability set type",
        _set("process", "capabilities", "ambient", value="CAP_KILL"),
        "process.capabilities.ambient",
        "expected a list of capability names",
    ),
    (
        "rlimit type",
        _set("process", "rlimits", 0, "type", value="RLIMIT_FOO"),
        "process.rlimits[0].type",
        "RLIMIT_NOFILE",
    ),
    (
        "rlimit soft",
        _set("process", "rlimits", 0, "soft", value=2048),
        "process.rlimits[0].soft",
        "above the hard limit 1024",
    ),
    ("rlimit negative", _set("process", "rlimits", 0, "hard", value=-1), "process.rlimits[0].hard", "got -1"),
    (
        "rlimit duplicate",
        _append("process", "rlimits", value={"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}),
        "process.rlimits[1].type",
        "duplicate rlimit 'RLIMIT_NOFILE', also at process.rlimits[0]",
    ),
    ("terminal", _set("process", "terminal", value="yes"), "process.terminal", 'true or false, got "yes"'),
    (
        "console size",
        _set("process", "consoleSize", value={"height": -1, "width": 80}),
        "process.consoleSize.height",
        "-1",
    ),
    ("console width", _set("process", "consoleSize", value={"height": 1}), "process.consoleSize.width", "required"),
    ("oom score", _set("process", "oomScoreAdj", value=5000), "process.oomScoreAdj", "-1000 to 1000"),
    ("nnp", _set("process", "noNewPrivileges", value=1), "process.noNewPrivileges", "true or false, got 1"),
    ("mounts type", _set("mounts", value={}), "mounts", "expected a list of mount objects, got {}"),
    ("mount dest", _set("mounts", 2, "destination", value="dev/pts"), "mounts[2].destination", "absolute path"),
    ("mount no dest", _delete("mounts", 0, "destination"), "mounts[0].destination", "required"),
    ("mount options", _set("mounts", 1, "options", value="nosuid"), "mounts[1].options", "list of strings"),
    ("mount fstype", _set("mounts", 0, "type", value=5), "mounts[0].type", "got 5"),
    ("mount source", _set("mounts", 0, "source", value=["proc"]), "mounts[0].source", 'got ["proc"]'),
    ("ns type", _set("linux", "namespaces", 1, "type", value="net"), "linux.namespaces[1].type", "one of pid, network"),
    (
        "ns duplicate",
        _append("linux", "namespaces", value={"type": "pid"}),
        "linux.namespaces[5].type",
        "duplicate namespace type 'pid', also at linux.namespaces[0]",
    ),
    ("ns path type", _set("linux", "namespaces", 0, "path", value=5), "linux.namespaces[0].path", "expected a string"),
    (
        "ns path relative",
        _set("linux", "namespaces", 0, "path", value="ns/pid"),
        "linux.namespaces[0].path",
        "absolute",
    ),
    ("hostname without uts", _no_uts, "hostname", "hostname requires a new uts namespace"),
    ("hostname type", _set("hostname", value=1), "hostname", "got 1"),
    (
        "uid mappings without userns",
        _set("linux", "uidMappings", value=[{"containerID": 0, "hostID": 1000, "size": 1}]),
        "linux.uidMappings",
        "require a user namespace",
    ),
    ("mapping size", _userns(_set("linux", "uidMappings", 0, "size", value=0)), "linux.uidMappings[0].size", "got 0"),
    (
        "mapping host id",
        _userns(_set("linux", "gidMappings", 0, "hostID", value=-1)),
        "linux.gidMappings[0].hostID",
        "got -1",
    ),
    (
        "mapping missing",
        _userns(_delete("linux", "gidMappings", 0, "containerID")),
        "linux.gidMappings[0].containerID",
        "required",
    ),
    (
        "device type",
        _set("linux", "devices", value=[{"path": "/dev/x", "type": "x"}]),
        "linux.devices[0].type",
        "c, b, u, p",
    ),
    (
        "device path",
        _set("linux", "devices", value=[{"path": "dev/x", "type": "c", "major": 1, "minor": 3}]),
        "linux.devices[0].path",
        "absolute path",
    ),
    (
        "device major",
        _set("linux", "devices", value=[{"path": "/dev/x", "type": "c"}]),
        "linux.devices[0].major",
        "required",
    ),
    (
        "device minor",
        _set("linux", "devices", value=[{"path": "/dev/x", "type": "b", "major": 1, "minor": "3"}]),
        "linux.devices[0].minor",
        'got "3"',
    ),
    (
        "sysctl",
        _set("linux", "sysctl", value={"net.ipv4.ip_forward": 1}),
        'linux.sysctl["net.ipv4.ip_forward"]',
        "got 1",
    ),
    ("sysctl type", _set("linux", "sysctl", value=["a=b"]), "linux.sysctl", "expected an object"),
    ("propagation", _set("linux", "rootfsPropagation", value="bogus"), "linux.rootfsPropagation", "'rslave'"),
    ("masked path", _set("linux", "maskedPaths", 0, value="proc/kcore"), "linux.maskedPaths[0]", "absolute path"),
    ("readonly paths", _set("linux", "readonlyPaths", value="/proc"), "linux.readonlyPaths", "list of absolute paths"),
    ("resources", _set("linux", "resources", value=[]), "linux.resources", "expected an object, got []"),
    ("linux type", _set("linux", value=[]), "linux", "expected an object"),
    ("annotations", _set("annotations", value={"a": 1}), "annotations.a", "expected a string, got 1"),
    ("hooks type", _set("hooks", value=[]), "hooks", "expected an object"),
    ("hook path", _set("hooks", value={"prestart": [{"path": "hook"}]}), "hooks.prestart[0].path", "absolute path"),
    (
        "hook timeout",
        _set("hooks", value={"poststop": [{"path": "/h", "timeout": 0}]}),
        "hooks.poststop[0].timeout",
        "positive integer",
    ),
    (
        "hook args",
        _set("hooks", value={"createRuntime": [{"path": "/h", "args": [1]}]}),
        "hooks.createRuntime[0].args[0]",
        "got 1",
    ),
    (
        "hook env",
        _set("hooks", value={"startContainer": [{"path": "/h", "env": "A=1"}]}),
        "hooks.startContainer[0].env",
        "list of strings",
    ),
]


@pytest.mark.parametrize("edit, path, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_config(edit: Edit, path: str, fragment: str) -> None:
    d = edited(edit)
    with pytest.raises(ConfigError) as info:
        Spec.from_dict(d)
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value) == f"{path}: {info.value.message}"


def test_from_dict_needs_an_object() -> None:
    with pytest.raises(ConfigError) as info:
        Spec.from_dict([])  # type: ignore[arg-type]
    assert info.value.path == "" and "JSON object, got []" in str(info.value)


# --- load / loads ---------------------------------------------------------------------


def _bundle(tmp_path: Path, text: str | bytes) -> Path:
    config = tmp_path / "config.json"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    return tmp_path


def test_load(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, json.dumps(default_spec(), indent="\t"))
    assert load(bundle) == load(str(bundle)) == Spec.from_dict(default_spec())
    assert loads(json.dumps(default_spec()).encode()).to_dict() == default_spec()


def test_load_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(_bundle(tmp_path, json.dumps(edited(_set("process", "cwd", value="x")))))
    assert info.value.path == "process.cwd"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{\n  "ociVersion": "1.0.2",\n  "hostname" "x"\n}', "Expecting ':' delimiter at line 3 column 14"),
        ("", "Expecting value at line 1 column 1"),
        ('{"ociVersion": "1.0.2",}', "line 1 column 24"),
        ('{"ociVersion": "1.0.2", "x": NaN}', "NaN is not a JSON value"),
        (b'{"ociVersion": "\xff"}', "not valid UTF-8"),
        ("[1, 2]", "expected config.json to hold a JSON object, got [1, 2]"),
    ],
)
def test_load_bad_json(tmp_path: Path, text: str | bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(_bundle(tmp_path, text))
    assert info.value.path == ""
    assert fragment in str(info.value)


def test_load_missing_bundle(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"bundle directory {missing} does not exist"):
        load(missing)
    (tmp_path / "file").touch()
    with pytest.raises(ConfigError, match="is not a directory"):
        load(tmp_path / "file")


def test_load_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json does not exist"):
        load(tmp_path)
