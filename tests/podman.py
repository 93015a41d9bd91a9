"""Builds and runs the images with podman, as the container tests and an operator without Docker
would. Host quirks live in `tests/containers.conf`, never in the images.

Where no registry serves a Dockerfile's `FROM` image (the case on machines that reach only
package registries), a stand-in is built from Debian's own packages and tagged with the `FROM`
name, so that the Dockerfile builds unchanged: `debootstrap` from the mirror apt uses, and
Debian's Python in a virtual environment first on `PATH`, as the official `python` images have
theirs in `/usr/local/bin`. It is built once per machine (about a minute) and kept in podman's
store like any image.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).parent.parent
CONTAINERS_CONF = Path(__file__).parent / "containers.conf"
STAND_IN_LABEL = "org.segmentation-service.stand-in-for"
# Raised when the stand-in's recipe changes: a machine's older stand-in is then rebuilt.
STAND_IN_VERSION = "1"
_VERSION_LABEL = "org.segmentation-service.stand-in-version"
_STAND_IN_VENV = "/usr/local/python"
_LOCK = Path("/var/tmp/segmentation-service-podman.lock")
_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
"""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One image build at a time on this machine (other checkouts build too)."""
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image(dockerfile: Path) -> str:
    """The external image of a Dockerfile's first stage, as written after FROM."""
    match = re.search(r"^FROM\s+(?:--\S+\s+)*(\S+)", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile} has no FROM"
    return match.group(1)


def ensure_base_image(name: str) -> str:
    """Makes `name` available in podman's store: already there, pulled, or a Debian stand-in.
    Returns how it came ("present", "pulled" or "stand-in built")."""
    if "/" not in name:
        name = f"docker.io/library/{name}"  # what a pull of the short name gives
    with machine_lock():
        if podman("image", "exists", name, check=False).returncode == 0:
            labels = podman("image", "inspect", "--format={{json .Labels}}", name).stdout
            if STAND_IN_LABEL not in labels or f'"{_VERSION_LABEL}":"{STAND_IN_VERSION}"' in labels:
                return "present"
        if _pulled(name):
            return "pulled"
        build_stand_in(name)
        return "stand-in built"


def _pulled(name: str) -> bool:
    """Whether a registry served the image; a network that drops packets counts as none."""
    try:
        return podman("pull", "--quiet", name, timeout=120, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build_stand_in(name: str) -> None:
    """A stand-in for the official `python:X.Y-slim-CODENAME` image from Debian's packages."""
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?python:(\d+\.\d+)-slim-(\w+)", name)
    assert match, f"no stand-in is known for {name}: only python:X.Y-slim-CODENAME"
    python_version, codename = match.groups()
    mirror, security = _apt_mirrors()
    with tempfile.TemporaryDirectory(prefix="stand-in-", dir="/var/tmp") as folder:
        rootfs = Path(folder) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             codename, str(rootfs), mirror],
            timeout=900,
        )  # fmt: skip
        found = _run(["chroot", str(rootfs), "python3", "-c", "import sys; print(sys.version)"])
        assert found.stdout.startswith(f"{python_version}."), (
            f"Debian {codename} has Python {found.stdout.strip()}, not the {python_version} "
            f"of {name}"
        )
        _run(["chroot", str(rootfs), "python3", "-m", "venv", _STAND_IN_VENV])
        _write_apt_sources(rootfs, codename, mirror, security)
        # As Debian's official images: apt keeps no caches of packages or package lists.
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(_APT_CLEAN)
        # As the slim images: no package lists, caches, documentation or manuals.
        for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / junk).mkdir(parents=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir()
        system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        changes = [
            f"ENV PATH={_STAND_IN_VENV}/bin:{system_path}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL {STAND_IN_LABEL}={name}",
            f"LABEL {_VERSION_LABEL}={STAND_IN_VERSION}",
        ]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--quiet", *(f"--change={c}" for c in changes), "-", name],
            stdin=tar.stdout, env=podman_env(), check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        assert tar.wait() == 0


def _apt_mirrors() -> tuple[str, str | None]:
    """The Debian mirror (and security mirror) this host's apt uses."""
    uris: list[tuple[str, str]] = []  # (uri, suites)
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            if "deb" in fields.get("Types", "").split():
                for uri in fields.get("URIs", "").split():
                    uris.append((uri, fields.get("Suites", "")))
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = re.sub(r"\[.*?\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    uris.append((parts[1], parts[2]))
    debian = [(uri, suites) for uri, suites in uris if "debian" in uri]
    mirror = next((uri for uri, suites in debian if "-security" not in suites), None)
    security = next((uri for uri, suites in debian if "-security" in suites), None)
    return mirror or "http://deb.debian.org/debian", security


def _write_apt_sources(rootfs: Path, codename: str, mirror: str, security: str | None) -> None:
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    stanzas = [f"Types: deb\nURIs: {mirror}\nSuites: {codename} {codename}-updates\n"
               f"Components: main\nSigned-By: {keyring}\n"]  # fmt: skip
    if security:
        stanzas.append(
            f"Types: deb\nURIs: {security}\nSuites: {codename}-security\n"
            f"Components: main\nSigned-By: {keyring}\n"
        )
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text("\n".join(stanzas))


def pip_ca_bundle() -> Path | None:
    """The CA bundle this host's pip trusts instead of its own, if one is set: a host behind an
    intercepting TLS proxy needs it, and so does a build on that host (as a build secret)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".cert") and value.strip("'\""):
            return Path(value.strip("'\""))
    return None


def build_image(
    dockerfile: Path, tag: str, build_args: Sequence[str] = (), timeout: float = 1800
) -> str:
    """Builds `dockerfile` from the repository root with layer caching; returns the image id.
    Docker's format keeps the HEALTHCHECK (OCI images have no field for it)."""
    ensure_base_image(base_image(dockerfile))
    secret = []
    if (bundle := pip_ca_bundle()) is not None:
        secret = [f"--secret=id=extra-ca-certs,src={bundle}"]
    with machine_lock(), tempfile.TemporaryDirectory() as folder:
        iidfile = Path(folder) / "iid"
        podman(
            "build", "--format=docker", "--layers", f"--iidfile={iidfile}",
            *secret, *(f"--build-arg={arg}" for arg in build_args),
            "-f", str(dockerfile), "-t", tag, str(ROOT),
            timeout=timeout,
        )  # fmt: skip
        return iidfile.read_text().strip().removeprefix("sha256:")


def image_size_mb(image: str) -> float:
    return int(podman("image", "inspect", "--format={{.Size}}", image).stdout) / 1e6


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{command[0]} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result
