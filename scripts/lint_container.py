#!/usr/bin/env python3
"""Checks of the container build that need no Docker engine (run by
scripts/lint-container.sh, which also runs hadolint):

  schema      docker-compose.yml against the Compose Specification's JSON
              schema (scripts/compose-spec.json; see scripts/README.md for its
              source and version).
  consistency every port, volume, path, binary and target that
              docker-compose.yml uses exists in the image (Dockerfile) and in
              the configs (configs/docker.toml, configs/prometheus.yml).

Usage:
  scripts/lint_container.py [--root DIR]           all checks; exit 1 on a failure
  scripts/lint_container.py --extract-schema BIN   print the compose-spec.json that the
                                                   Docker Compose binary BIN embeds

Needs Python 3.11+ (tomllib), PyYAML and jsonschema (pip install pyyaml jsonschema).
"""

import argparse
import ipaddress
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path, PurePosixPath

IMAGE = "logdist:local"
CONFIG_IN_IMAGE = "/etc/logdist/logdist.toml"


class Report:
    def __init__(self):
        self.failures = []
        self.passed = []

    def check(self, ok, what, why=""):
        if ok:
            self.passed.append(what)
        else:
            self.failures.append(f"{what}: {why}" if why else what)
        return ok


# ---- Dockerfile ---------------------------------------------------------------


def dockerfile_instructions(text):
    """(instruction, arguments) in order: continuations joined, comments and
    parser directives dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def words(args):
    """The words of a JSON-array (exec form) or shell-form argument."""
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


class Image:
    """What the final stage of the Dockerfile puts in the image."""

    def __init__(self, text):
        self.args = {}
        self.stages = []  # (name, base)
        self.expose = set()
        self.volumes = []
        self.copies = []  # (sources, dest, from_stage)
        self.env = {}
        self.user = None
        self.workdir = None
        self.stopsignal = None
        self.healthcheck = None
        self.cmd = None
        self.entrypoint = None
        for instruction, args in dockerfile_instructions(text):
            if instruction == "ARG" and not self.stages:
                name, _, default = args.partition("=")
                self.args[name.strip()] = default.strip()
            elif instruction == "FROM":
                parts = args.split()
                name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
                self.stages.append((name, parts[0]))
                # Everything below describes the last stage only.
                self.expose, self.volumes, self.copies, self.env = set(), [], [], {}
                self.user = self.workdir = self.stopsignal = None
                self.healthcheck = self.cmd = self.entrypoint = None
            elif instruction == "EXPOSE":
                for port in args.split():
                    self.expose.add(int(port.split("/")[0]))
            elif instruction == "VOLUME":
                self.volumes.extend(words(args))
            elif instruction == "COPY":
                parts = words(args)
                from_stage = None
                while parts and parts[0].startswith("--"):
                    flag = parts.pop(0)
                    if flag.startswith("--from="):
                        from_stage = flag.split("=", 1)[1]
                self.copies.append((parts[:-1], parts[-1], from_stage))
            elif instruction == "ENV":
                name, _, value = args.partition("=")
                self.env[name.strip()] = value.strip()
            elif instruction == "USER":
                self.user = args
            elif instruction == "WORKDIR":
                self.workdir = args
            elif instruction == "STOPSIGNAL":
                self.stopsignal = args
            elif instruction == "HEALTHCHECK":
                self.healthcheck = args
            elif instruction == "CMD":
                self.cmd = words(args)
            elif instruction == "ENTRYPOINT":
                self.entrypoint = words(args)

    def installed(self, path):
        """The source of a file COPY'd to `path`, (sources, from_stage), or None."""
        for sources, dest, from_stage in self.copies:
            if dest == path:
                return sources, from_stage
            if dest.endswith("/"):
                for source in sources:
                    if dest + PurePosixPath(source).name == path:
                        return [source], from_stage
        return None

    def under_volume(self, path):
        return any(
            path == v or path.startswith(v.rstrip("/") + "/") for v in self.volumes
        )


# ---- helpers ------------------------------------------------------------------


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


def flag(command, name):
    """The value of `name VALUE` in a command's words, or None."""
    for i, word in enumerate(command[:-1]):
        if word == name:
            return command[i + 1]
    return None


def parse_duration(text):
    """Seconds of "250ms", "5s", "2m" or a bare number of seconds (logdist-ship)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(text).strip())
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def workspace_binaries(root):
    """Names of the binaries the workspace builds."""
    names = set()
    for manifest in sorted((root / "crates").glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        for binary in data.get("bin", []):
            names.add(binary["name"])
        if (manifest.parent / "src" / "main.rs").exists():
            names.add(data["package"]["name"])
    return names


def mounts(service):
    """(source, target, read_only, kind) of a service's volumes (short syntax)."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append(
                (entry.get("source"), entry["target"], entry.get("read_only", False),
                 entry.get("type", "volume"))
            )
            continue
        parts = entry.split(":")
        source, target = parts[0], parts[1]
        read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((source, target, read_only, kind))
    return out


def mount_of(service, path):
    """The mount of `service` that `path` lies in (the longest target)."""
    best = None
    for mount in mounts(service):
        target = mount[1].rstrip("/")
        if (path == target or path.startswith(target + "/")) and (
            best is None or len(target) > len(best[1])
        ):
            best = mount
    return best


# ---- checks -------------------------------------------------------------------


def check_schema(compose, schema, report):
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        report.check(False, f"schema: docker-compose.yml at {where}", error.message)
    report.check(
        not errors,
        f"schema: docker-compose.yml is valid against {schema.get('title')} "
        f"({schema.get('$schema')})",
        f"{len(errors)} errors",
    )


def check_image(root, image, config, report):
    workspace = tomllib.loads((root / "Cargo.toml").read_text())
    rust_version = workspace["workspace"]["package"]["rust-version"]
    builder_bases = [base for _, base in image.stages[:-1]]
    report.check(
        any(base.startswith("rust:${RUST_VERSION}") for base in builder_bases)
        and image.args.get("RUST_VERSION") == rust_version,
        f"Dockerfile: builds with rust:{rust_version} (Cargo.toml rust-version)",
        f"ARG RUST_VERSION={image.args.get('RUST_VERSION')!r}, bases {builder_bases}",
    )
    final_base = image.stages[-1][1]
    report.check(
        final_base.startswith("debian:") and "slim" in final_base
        or "distroless" in final_base,
        "Dockerfile: a small runtime stage (debian slim or distroless)",
        final_base,
    )
    user = (image.user or "").split(":")[0]
    report.check(
        bool(user) and user not in ("0", "root"),
        "Dockerfile: the runtime runs as a non-root user",
        f"USER {image.user!r}",
    )
    report.check(
        image.stopsignal == "SIGTERM", "Dockerfile: STOPSIGNAL SIGTERM", str(image.stopsignal)
    )
    health = image.healthcheck or ""
    report.check(
        "CMD" in health and "logdist" in health and "health" in health,
        "Dockerfile: HEALTHCHECK runs `logdist health` (no curl)",
        health,
    )
    # The config.
    source = image.installed(CONFIG_IN_IMAGE)
    report.check(
        source is not None and source[1] is None and source[0] == ["configs/docker.toml"],
        f"Dockerfile: {CONFIG_IN_IMAGE} is configs/docker.toml",
        f"COPY to it: {source}",
    )
    report.check(
        image.env.get("LOGDIST_CONFIG") == CONFIG_IN_IMAGE,
        f"Dockerfile: LOGDIST_CONFIG={CONFIG_IN_IMAGE} (for logdist and logdist health)",
        str(image.env.get("LOGDIST_CONFIG")),
    )
    # Ports: every listener of the config is exposed, and nothing else.
    ports = config_ports(config)
    report.check(
        image.expose == set(ports),
        "Dockerfile: EXPOSE is every port of configs/docker.toml "
        + ", ".join(f"{p} ({r})" for p, r in sorted(ports.items())),
        f"EXPOSE {sorted(image.expose)}",
    )
    # State on the volume.
    state = {
        "delivery.dead_letter_path": config.get("delivery", {}).get("dead_letter_path"),
        "durability.dir": config.get("durability", {}).get("dir"),
    }
    for key, path in state.items():
        report.check(
            bool(path) and image.under_volume(str(path)),
            f"configs/docker.toml: {key} ({path}) is in a VOLUME of the image",
            f"VOLUME {image.volumes}",
        )
    report.check(
        image.workdir is not None and image.under_volume(image.workdir),
        "Dockerfile: WORKDIR is in the volume (relative paths land there)",
        str(image.workdir),
    )
    # Binaries.
    binaries = workspace_binaries(root)
    for name in ("logdist", "logdist-ship", "logdist-loadtest"):
        source = image.installed(f"/usr/local/bin/{name}")
        report.check(
            source is not None and name in binaries and source[1] is not None,
            f"Dockerfile: /usr/local/bin/{name} comes from the build stage",
            f"COPY: {source}, workspace binaries: {sorted(binaries)}",
        )


def config_ports(config):
    """port -> what listens there, from the container config."""
    ports = {}
    for listener in config.get("listeners", []):
        ports[port_of(listener["address"])] = (
            "shipper" if listener.get("ack") == "message" else "emitters"
        )
    ports[port_of(config["analyzers"]["listen"])] = "analyzers"
    admin = config.get("admin", {}).get("listen")
    if admin:
        ports[port_of(admin)] = "admin"
    return ports


def check_compose(root, compose, image, config, report):
    services = compose.get("services", {})
    declared_volumes = set((compose.get("volumes") or {}).keys())
    ports = config_ports(config)
    by_role = {}
    for port, role in ports.items():
        by_role.setdefault(role, set()).add(port)
    installed = {
        PurePosixPath(dest).name if not dest.endswith("/") else None
        for _, dest, _ in image.copies
    }
    installed |= {
        PurePosixPath(source).name
        for sources, dest, _ in image.copies
        if dest.endswith("/")
        for source in sources
    }
    ours = {name: s for name, s in services.items() if s.get("image") == IMAGE}
    builders = [name for name, s in ours.items() if "build" in s]
    report.check(
        len(builders) == 1,
        f"compose: one service builds {IMAGE}, the others run it",
        f"services with build: {builders}",
    )
    for name in builders:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        report.check(
            (root / context / dockerfile).is_file(),
            f"compose: {name} builds {context}/{dockerfile}",
            "no such file",
        )
    for name, service in ours.items():
        if name not in builders:
            report.check(
                service.get("pull_policy") == "never",
                f"compose: {name} uses the local image (pull_policy: never)",
                str(service.get("pull_policy")),
            )
    roles = {"emitter": 0, "analyzer": 0}
    for name, service in ours.items():
        command = service.get("command") or image.cmd
        if isinstance(command, str):
            command = shlex.split(command)
        program = command[0]
        report.check(
            program in installed or program in ("sh",),
            f"compose: {name} runs {program}, which the image has",
            f"installed: {sorted(p for p in installed if p)}",
        )
        # Paths in the image the command names.
        for word in command:
            if word.startswith("/etc/logdist/"):
                report.check(
                    image.installed(word) is not None,
                    f"compose: {name}'s {word} is in the image",
                    "no COPY puts it there",
                )
        # Dial targets: the right listener of the right service.
        if program == "logdist-loadtest" and len(command) > 1 and command[1] in roles:
            role = command[1]
            roles[role] += 1
            target = flag(command, "--target")
            host, _, port = (target or "").rpartition(":")
            want = "emitters" if role == "emitter" else "analyzers"
            report.check(
                host in services and port.isdigit() and int(port) in by_role.get(want, set()),
                f"compose: {name} ({role}) dials {target}, the {want} listener of {host}",
                f"{want} ports in configs/docker.toml: {sorted(by_role.get(want, []))}",
            )
        if program == "logdist-ship":
            host, port = flag(command, "--server-host"), flag(command, "--server-port")
            report.check(
                host in services and port is not None and int(port) in by_role.get("shipper", set()),
                f"compose: {name} ships to {host}:{port}, an acking listener (ack = \"message\")",
                f"acking ports: {sorted(by_role.get('shipper', []))}",
            )
            check_shipper_files(name, service, command, services, report)
            wait = parse_duration(flag(command, "--shutdown-timeout") or "10")
            stop = parse_duration(service.get("stop_grace_period", "10s"))
            report.check(
                wait is not None and stop is not None and wait < stop,
                f"compose: {name}'s --shutdown-timeout ({wait} s) ends inside its "
                f"stop_grace_period ({stop} s)",
                "Docker kills it first",
            )
        # Published ports: exposed by the image, on the host's loopback only.
        check_ports(name, service, image.expose, report)
        # Volumes: declared; a writable one where the image's (non-root)
        # user owns the directory, which a new volume copies.
        for source, target, read_only, kind in mounts(service):
            if kind == "volume":
                report.check(
                    source in declared_volumes,
                    f"compose: {name}'s volume {source} is declared",
                    f"declared: {sorted(declared_volumes)}",
                )
            if not read_only:
                report.check(
                    image.under_volume(target),
                    f"compose: {name} mounts {source} writable at {target}, a VOLUME "
                    "directory the image's user owns",
                    f"VOLUME {image.volumes}; mount it read-only or under a VOLUME",
                )
    report.check(
        roles["emitter"] >= 3 and roles["analyzer"] >= 3,
        "compose: at least three emitters and three analyzers",
        str(roles),
    )
    weights = sorted(
        float(flag(s["command"], "--weight") or 1)
        for s in ours.values()
        if isinstance(s.get("command"), list) and s["command"][1:2] == ["analyzer"]
    )
    report.check(
        weights == [1.0, 2.0, 3.0], "compose: analyzer weights 1:2:3", str(weights)
    )
    # logdist: its state on a volume, its grace, its health check.
    for name in builders:
        service = services[name]
        data = [m for m in mounts(service) if m[1] in image.volumes]
        report.check(
            bool(data),
            f"compose: {name} keeps {', '.join(image.volumes)} on a named volume",
            str(mounts(service)),
        )
        grace = parse_duration(config.get("delivery", {}).get("shutdown_grace", "5s"))
        stop = parse_duration(service.get("stop_grace_period", "10s"))
        report.check(
            grace is not None and stop is not None and stop >= grace + 2,
            f"compose: {name}'s stop_grace_period ({stop} s) covers shutdown_grace + 2 s",
            f"shutdown_grace {grace} s",
        )
        test = (service.get("healthcheck") or {}).get("test") or []
        report.check(
            test[:3] == ["CMD", "logdist", "health"],
            f"compose: {name}'s health check is `logdist health`",
            str(test),
        )
        admin_ports = by_role.get("admin", set())
        published = {int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])}
        report.check(
            admin_ports and admin_ports <= published,
            f"compose: {name} publishes the admin API ({sorted(admin_ports)})",
            str(sorted(published)),
        )
    # Health-gated start: a service_healthy dependency has a health check.
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            if isinstance(how, dict) and how.get("condition") == "service_healthy":
                target = services.get(dep, {})
                has_check = "healthcheck" in target or (
                    target.get("image") == IMAGE and image.healthcheck
                )
                report.check(
                    has_check,
                    f"compose: {name} waits for {dep} to be healthy, which has a health check",
                    "no healthcheck",
                )
    # Other images (Prometheus): published on loopback, bind mounts exist.
    for name, service in services.items():
        if name in ours:
            continue
        check_ports(name, service, None, report)
        for source, target, _, kind in mounts(service):
            if kind == "bind":
                report.check(
                    (root / source).is_file() or (root / source).is_dir(),
                    f"compose: {name}'s bind mount {source} exists",
                    "no such file",
                )
                if target.endswith("prometheus.yml"):
                    check_prometheus(root / source, services, by_role, report)


def check_ports(name, service, exposed, report):
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host_ip, container = entry.get("host_ip", ""), int(entry["target"])
        else:
            parts = str(entry).rsplit(":", 2)
            if len(parts) < 3:
                report.check(False, f"compose: {name} publishes {entry} on every address",
                             "publish on 127.0.0.1 only")
                continue
            host_ip, container = parts[0].strip("[]"), int(parts[2].split("/")[0])
        try:
            loopback = ipaddress.ip_address(host_ip).is_loopback
        except ValueError:
            loopback = False
        report.check(
            loopback,
            f"compose: {name} publishes {container} on the host's loopback only",
            f"host address {host_ip!r}",
        )
        if exposed is not None:
            report.check(
                container in exposed,
                f"compose: {name}'s published port {container} is EXPOSEd by the image",
                f"EXPOSE {sorted(exposed)}",
            )


def check_shipper_files(name, service, command, services, report):
    log_file = flag(command, "--log-file")
    mount = mount_of(service, log_file or "")
    report.check(
        mount is not None and mount[3] == "volume",
        f"compose: {name}'s --log-file {log_file} is on a shared volume",
        f"mounts: {mounts(service)}",
    )
    if mount:
        relative = log_file[len(mount[1].rstrip("/")) + 1:]
        writers = [
            (other, m[1])
            for other, s in services.items()
            if other != name
            for m in mounts(s)
            if m[0] == mount[0] and not m[2]
        ]
        written = [
            other for other, target in writers
            if f"{target.rstrip('/')}/{relative}" in json.dumps(services[other].get("command"))
        ]
        report.check(
            bool(written),
            f"compose: a service writes {relative} in volume {mount[0]} that {name} tails",
            f"services mounting it writable: {writers}",
        )
    checkpoint = flag(command, "--checkpoint")
    if checkpoint:
        mount = mount_of(service, checkpoint)
        report.check(
            mount is not None and not mount[2],
            f"compose: {name}'s --checkpoint {checkpoint} is on a writable volume",
            f"mounts: {mounts(service)}",
        )


def check_prometheus(path, services, by_role, report):
    import yaml

    config = yaml.safe_load(path.read_text())
    jobs = config.get("scrape_configs", [])
    report.check(bool(jobs), f"{path.name}: has a scrape job", "no scrape_configs")
    for job in jobs:
        report.check(
            job.get("metrics_path", "/metrics") == "/metrics",
            f"{path.name}: job {job.get('job_name')} scrapes /metrics",
            str(job.get("metrics_path")),
        )
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = target.rpartition(":")
                report.check(
                    host in services and int(port) in by_role.get("admin", set()),
                    f"{path.name}: target {target} is the admin port of service {host}",
                    f"admin ports: {sorted(by_role.get('admin', []))}",
                )


def extract_schema(binary):
    """The compose-spec.json embedded (verbatim, by go:embed) in a Docker
    Compose binary."""
    data = Path(binary).read_bytes()
    marker = data.find(b'"title": "Compose Specification"')
    if marker < 0:
        sys.exit(f"{binary}: no Compose Specification schema in it")
    start = data.rfind(b'{\n  "$schema"', 0, marker)
    text = data[start:start + 1_000_000].decode("utf-8", "replace")
    _, end = json.JSONDecoder().raw_decode(text)
    raw = text[:end].encode("utf-8")
    if data[start:start + len(raw)] != raw:
        sys.exit(f"{binary}: the schema is not plain UTF-8")
    sys.stdout.write(raw.decode() + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=Path(__file__).resolve().parent.parent, type=Path)
    parser.add_argument("--extract-schema", metavar="BINARY")
    parser.add_argument("--quiet", action="store_true", help="print failures only")
    args = parser.parse_args()
    if args.extract_schema:
        extract_schema(args.extract_schema)
        return 0
    try:
        import jsonschema  # noqa: F401
        import yaml
    except ImportError as e:
        print(f"lint_container.py: {e.name} is missing: pip install pyyaml jsonschema",
              file=sys.stderr)
        return 77
    root = args.root
    report = Report()
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    schema = json.loads((root / "scripts" / "compose-spec.json").read_text())
    image = Image((root / "Dockerfile").read_text())
    config = tomllib.loads((root / "configs" / "docker.toml").read_text())
    check_schema(compose, schema, report)
    check_image(root, image, config, report)
    check_compose(root, compose, image, config, report)
    if not args.quiet:
        for line in report.passed:
            print(f"ok    {line}")
    for line in report.failures:
        print(f"FAIL  {line}")
    print(f"{len(report.passed)} checks passed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
