"""Prints the project's requirements from pyproject.toml, with the extras named in the first
argument (comma-separated, may be empty): the image installs them in a layer of their own, so
that a change to the code does not reinstall them."""

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


if __name__ == "__main__":
    with open(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    extras = [extra.strip() for extra in sys.argv[1].split(",") if extra.strip()]
    print("\n".join(requirements(project, extras)))
