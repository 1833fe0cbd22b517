"""Build the course website: the README, the course guide and syllabus, every lesson guide, every notebook
(with its committed outputs, not re-executed) and every assignment's release notebook, as static HTML.

    pip install -e ".[docs]"
    python course/site/build.py                 # -> _build/site/html/index.html (offline, ~1-2 minutes)
    python course/site/build.py --output DIR    # elsewhere

Jupyter Book 1.x (Sphinx) does the work. The table of contents is written here from the files found
(notebooks/*.ipynb, course/lessons/*.md, course/assignments/release/*/*.ipynb), so a new lesson appears on
the site without editing anything. Sphinx warnings are errors, and after the build every internal link
(href and src of every page) must resolve to a file of the site, and every #anchor to an id on its page.
"""

from __future__ import annotations

import argparse
import html.parser
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(__file__).resolve().parent


def pages(root: Path = ROOT) -> dict[str, list[Path]]:
    """The site's pages by part, relative to the repository root, in course order."""
    return {
        "The course": [Path("course/README.md"), Path("course/syllabus.md"), Path("course/claims.md")],
        "Lesson guides (instructor)": sorted(p.relative_to(root) for p in (root / "course/lessons").glob("*.md")),
        "Notebooks (student)": sorted(p.relative_to(root) for p in (root / "notebooks").glob("*.ipynb")),
        "Assignments (nbgrader release)": sorted(p.relative_to(root) for p in
                                                 (root / "course/assignments/release").glob("*/*.ipynb")),
    }


def table_of_contents(parts: dict[str, list[Path]]) -> str:
    lines = ["# Written by course/site/build.py from the files it found: do not edit.", "format: jb-book",
             "root: README", "parts:"]
    for caption, files in parts.items():
        lines += [f"  - caption: {caption}", "    chapters:"]
        lines += [f"      - file: {path.with_suffix('').as_posix()}" for path in files]
    return "\n".join(lines) + "\n"


def stage(source: Path) -> None:
    """Copy the pages (keeping the repository's layout, so relative links between them still work),
    the configuration and a generated table of contents into `source`."""
    if source.exists():
        shutil.rmtree(source)
    parts = pages()
    for path in [Path("README.md")] + [p for files in parts.values() for p in files]:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, source / path)
    shutil.copy(SITE / "_config.yml", source / "_config.yml")
    (source / "_ext").mkdir()
    for name in ("offline_site.py", "favicon.svg"):
        shutil.copy(SITE / name, source / "_ext" / name)
    (source / "_toc.yml").write_text(table_of_contents(parts))


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []            # (tag, address)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if value and ((name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script"))):
                self.links.append((tag, value))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def check_links(html_dir: Path) -> list[str]:
    """Every relative href/src of every page names an existing file (and an existing id for #anchors);
    no page loads a script, stylesheet or image from another host (the site must work offline)."""
    problems, parsed = [], {}
    for page in sorted(p for p in html_dir.rglob("*.html") if p.relative_to(html_dir).parts[0] != "_static"):
        parsed[page] = parsed.get(page) or _parse(page)
        for tag, link in parsed[page].links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:                        # http(s), mailto, data, //host ...
                if tag != "a" and parts.scheme != "data":          # a link to follow is fine, a resource is not
                    problems.append(f"{page.relative_to(html_dir)}: loads {link} from another host")
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{page.relative_to(html_dir)}: broken link {link}")
                continue
            if parts.fragment and target.suffix == ".html":
                parsed[target] = parsed.get(target) or _parse(target)
                if unquote(parts.fragment) not in parsed[target].ids:
                    problems.append(f"{page.relative_to(html_dir)}: no #{parts.fragment} in {target.name}")
    return problems


def build(output: Path) -> Path:
    source = output.parent / "site_src"
    stage(source)
    if not _has_module("jupyter_book"):
        sys.exit("jupyter-book is not installed: pip install -e '.[docs]'")
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
               "--path-output", str(output), "--builder", "html", "-W", "-n", "--keep-going", "--all"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL)
    if result.returncode:
        sys.exit("the site build failed (Sphinx warnings are errors): see the messages above")
    html_dir = output / "_build" / "html"
    problems = check_links(html_dir)
    if problems:
        sys.exit("broken links in the built site:\n  " + "\n  ".join(problems))
    return html_dir


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "_build" / "site",
                        help="build folder (default: _build/site; the pages land in OUTPUT/_build/html)")
    args = parser.parse_args(argv)
    html_dir = build(args.output.resolve())
    print(f"site built, every internal link checked: {html_dir / 'index.html'}")


if __name__ == "__main__":
    main()
