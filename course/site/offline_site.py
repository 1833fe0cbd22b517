"""A Sphinx extension for the course website: every page lists each script once.

sphinx-thebe (which Jupyter Book 1.x always loads) adds its inline `const THEBE_JS_URL = ...` script twice
with Sphinx 7, and the second copy is a JavaScript error ("Identifier 'THEBE_JS_URL' has already been
declared") on every page. The site does not use Thebe (no live code); dropping the duplicate is enough.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", None) or "", attributes.get("body") or "")   # inline: None or ""
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
