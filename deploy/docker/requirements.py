"""Prints the project's requirements from pyproject.toml, with the extras named in the first
argument (comma-separated, may be empty): the image installs them in a layer of their own, so
that a change to the code does not reinstall them. The project's own distributions that are on
no index (the client, from the pyproject.toml files after the second argument) are replaced by
their own requirements: the image installs them from wheels built beside the server's."""

import re
import sys
import tomllib


def extra_requirements(project: dict, extra: str) -> list[str]:
    found = []
    for requirement in project["optional-dependencies"][extra]:
        # An extra may name others of the project's own: "segmentation-service[webrtc]".
        own = re.fullmatch(rf"{re.escape(project['name'])}\[(.+)\]", requirement)
        if own:
            for other in own[1].split(","):
                found += extra_requirements(project, other.strip())
        else:
            found.append(requirement)
    return found


def requirements(project: dict, extras: list[str]) -> list[str]:
    found = list(project["dependencies"])
    for extra in extras:
        found += extra_requirements(project, extra)
    return found


def _project(path: str) -> dict:
    with open(path, "rb") as file:
        return tomllib.load(file)["project"]


def without_local(found: list[str], local: list[dict]) -> list[str]:
    """`found` with each local distribution replaced by its own requirements."""
    names = {project["name"]: project for project in local}
    result = []
    for requirement in found:
        name = re.split(r"[\s\[=<>!~;]", requirement, maxsplit=1)[0]
        result += names[name]["dependencies"] if name in names else [requirement]
    return result


if __name__ == "__main__":
    project = _project(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml")
    local = [_project(path) for path in sys.argv[3:]]
    extras = [extra.strip() for extra in sys.argv[1].split(",") if extra.strip()]
    print("\n".join(without_local(requirements(project, extras), local)))
