"""Small fixes to the Jupyter Book 1.x site (loaded through `sphinx.local_extensions` in _config.yml).

* Each script is emitted once per page. With Sphinx 7.4, sphinx-thebe's inline configuration
  script (`const THEBE_JS_URL = ...`) and sphinx-togglebutton's are registered twice (once with
  filename None, once with ""), and the second THEBE copy throws "SyntaxError: Identifier
  'THEBE_JS_URL' has already been declared" on every page.
"""
from __future__ import annotations


def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    return (str(getattr(js, "filename", js) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
