"""galaxy.yml as Galaxy and Automation Hub read it: no placeholder URL, the tags Hub requires."""
from __future__ import annotations

import os
from urllib.parse import urlparse

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Automation Hub's required tags (galaxy-importer CHECK_REQUIRED_TAGS): at least one of these.
HUB_TAGS = {"application", "cloud", "database", "eda", "infrastructure", "linux", "monitoring", "networking",
            "security", "storage", "tools", "windows"}


def galaxy() -> dict:
    with open(os.path.join(REPO, "galaxy.yml")) as fh:
        return yaml.safe_load(fh)


def test_no_placeholder_urls():
    meta = galaxy()
    for key in ("repository", "documentation", "homepage", "issues"):
        if key in meta:
            url = urlparse(meta[key])
            assert url.scheme == "https" and url.hostname, (key, meta[key])
            assert not url.hostname.endswith((".invalid", ".test", ".example", "example.com", "example.org",
                                              "localhost")), (key, meta[key])


def test_hub_required_tag_and_license():
    meta = galaxy()
    assert HUB_TAGS & set(meta["tags"])
    assert meta["license"] == ["GPL-3.0-or-later"] and os.path.exists(os.path.join(REPO, "LICENSE"))
