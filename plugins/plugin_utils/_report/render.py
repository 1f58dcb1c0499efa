# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""The fleet report rendered and written: JSON, Markdown and HTML from the Jinja2 templates of
roles/audit/templates/ (a user may replace them), each cell escaped for its output kind (Markdown specials,
HTML), the set of files written all or none."""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import uuid
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from ansible_collections.lqos.bpf.plugins.module_utils._common import fsync_dir
from ansible_collections.lqos.bpf.plugins.plugin_utils._report.report import SHORT_HASH, STATUSES, summary_line


# ---------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------

def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def collection_version(root: str):
    """The version of the collection at ``root``: MANIFEST.json when installed, galaxy.yml in a checkout."""
    try:
        with open(os.path.join(root, "MANIFEST.json")) as fh:
            return json.load(fh)["collection_info"]["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(os.path.join(root, "galaxy.yml")) as fh:
            for line in fh:
                if line.startswith("version:"):
                    return line.split(":", 1)[1].strip().strip("'\"") or None
    except OSError:
        pass
    return None


def short(sha) -> str:
    return sha[:SHORT_HASH] if sha else "(none)"


# Characters that change a Markdown document's structure when host data carries them: the table's cell
# separator, code spans, emphasis, links and images, strikethrough, and the escape character itself. "<", ">"
# and "&" are HTML-escaped first (Markdown renders HTML); quotes need no escaping outside an HTML attribute,
# and no attribute can start once "<" is escaped. "_" is escaped where it can open or close emphasis (not
# inside a word, so flow_table stays flow_table).
_MD_SPECIAL = {ord(c): "\\" + c for c in "\\`*[]|~"}
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_NEWLINES = {ord("\r"): None, ord("\n"): "<br>"}


class MarkdownText(Markup):
    """Text escaped for a Markdown document (HTML-escaped, then Markdown-escaped): never escaped again."""

    __slots__ = ()


def md_cell(text) -> MarkdownText:
    """``text`` as safe Markdown (and a table cell): ``<``, ``>``, ``&`` HTML-escaped (markupsafe), ``\\ ` * [ ]
    | ~`` and a ``_`` outside a word backslash-escaped, a line break as ``<br>``; ``None`` is empty. Text that
    is already ``MarkdownText`` is returned as it is; other ``Markup`` (from an autoescaped ``join``, say) is
    HTML-safe already and is only Markdown-escaped."""
    if isinstance(text, MarkdownText):
        return text
    html = str(text if isinstance(text, Markup) else escape("" if text is None else text))
    html = html.replace("&#39;", "'").replace("&#34;", '"').translate(_MD_SPECIAL)
    return MarkdownText(_MD_UNDERSCORE.sub(r"\\_", html).translate(_NEWLINES))


def md_finalize(value):
    """Every ``{{ }}`` of a Markdown template goes through here: host data is escaped whatever the template does."""
    return md_cell(value)


class ReportError(Exception):
    """A report that cannot be written as asked (one line: the problem and the fix)."""


class ReportTemplateError(ReportError):
    pass


KINDS = ("markdown", "html")


def check_template(template_path: str) -> None:
    """Raise ReportTemplateError when ``template_path`` is a folder or not a readable file."""
    if os.path.isdir(template_path):
        raise ReportTemplateError("the report template %s is a folder, not a template file. Fix: name a Jinja2 "
                                  "template file inside it (e.g. %s)" % (
                                      template_path, os.path.join(template_path, "fleet-abi-report.md.j2")))
    if not os.path.isfile(template_path):
        raise ReportTemplateError("the report template %s does not exist or is not a regular file. Fix: give the "
                                  "path of a Jinja2 template file" % template_path)


def render(report: dict, template_path: str, kind: str | None = None) -> str:
    """Render ``report`` with the Jinja2 template at ``template_path`` for the output ``kind`` (``markdown`` or
    ``html``; by default guessed from the name: ``.html``/``.html.j2`` is HTML, anything else Markdown).

    Escaping follows the output kind, never the template's file name: HTML output is always autoescaped
    (markupsafe); in Markdown output every ``{{ }}`` is HTML-escaped and Markdown-escaped (``md_cell``).
    Filters: ``short`` (a hash's first characters), ``md`` (a Markdown table cell); ``summary`` is the one-line
    summary. Raises ReportTemplateError (one line, the template named) for a folder, a missing file or any
    Jinja2 error."""
    if kind is None:
        kind = "html" if template_path.endswith((".html", ".html.j2")) else "markdown"
    if kind not in KINDS:
        raise ValueError("kind must be one of %s, not %r" % (", ".join(KINDS), kind))
    check_template(template_path)
    env = Environment(
        loader=FileSystemLoader(os.path.dirname(template_path) or "."),
        autoescape=True, finalize=md_finalize if kind == "markdown" else None,
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["short"] = short
    env.filters["md"] = md_cell
    try:
        template = env.get_template(os.path.basename(template_path))
        return template.render(report=report, summary=summary_line(report), statuses=STATUSES)
    except Exception as exc:  # pylint: disable=broad-exception-caught  # a user's template: any Jinja2 error
        raise ReportTemplateError("cannot render the report template %s: %s: %s" % (
            template_path, type(exc).__name__, exc)) from exc


SUFFIXES = {"json": ".json", "markdown": ".md", "html": ".html"}


def check_basename(basename: str) -> None:
    """Raise ReportError unless ``basename`` is a plain file name (the files go into ``dest``, nowhere else)."""
    if not basename or basename in (".", "..") or "/" in basename or os.sep in basename or "\0" in basename:
        raise ReportError("the report basename %r is not a plain file name: it must not hold a path (no '/', "
                          "not '.' or '..'), the report files are written into dest only. Fix: give a name "
                          "such as fleet-abi-report and put the folder in dest (lqos_bpf_report_dir)" % basename)


def render_set(report: dict, dest: str, basename: str, formats, templates: dict) -> dict:
    """Every file of the report, rendered before any is written: {format: (path, text)}.

    ``templates``: {"markdown": path, "html": path}. Raises ReportError for a basename with a path in it and
    ReportTemplateError for a template that does not render (nothing written either way)."""
    check_basename(basename)
    out = {}
    for fmt in formats:
        text = to_json(report) if fmt == "json" else render(report, templates[fmt], kind=fmt)
        out[fmt] = (os.path.join(dest, basename + SUFFIXES[fmt]), text)
    return out


def write_set(files: dict, mode: int = 0o644) -> None:
    """Write a set of files ({path: bytes}) all or none.

    Each file is first written in full (and fsynced) to a temporary file beside it, and each old file gets a
    hard link as its backup; only then are the new files renamed over the old ones, one ``rename(2)`` each. A
    failure on the way (ENOSPC while writing, a rename refused) puts the old files back from their backups,
    removes the new ones that had no old file and every temporary file, and re-raises the OSError: the older
    set stays as it was."""
    staged, backups, done = [], {}, []
    try:
        for path, data in files.items():
            directory = os.path.dirname(path) or "."
            fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            if os.path.isfile(path) and not os.path.islink(path):
                backup = os.path.join(directory, ".%s.%s.old" % (os.path.basename(path), uuid.uuid4().hex))
                os.link(path, backup)  # EEXIST rather than overwrite, should the name ever exist
                backups[path] = backup
        for tmp, path in staged:
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for path in done:
            if path in backups:
                os.replace(backups.pop(path), path)
            else:
                os.unlink(path)
        for tmp in [t for t, _p in staged] + list(backups.values()):
            if os.path.lexists(tmp):
                os.unlink(tmp)
        raise
    for backup in backups.values():
        os.unlink(backup)
    for directory in sorted({os.path.dirname(p) or "." for p in files}):
        fsync_dir(directory)
