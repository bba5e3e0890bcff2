"""What the README and the docs show holds in a clone: every relative link points to a file that is
there (not one that only a build or a run makes), and every list of plugin kinds they quote is the
registry's."""

import re
import shutil
import subprocess
from pathlib import Path

from zooframe.config.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted(ROOT.glob("plugins/*/README.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    targets = (m["target"].split("#")[0] for m in LINK.finditer(text))
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def ignored(paths: list[Path]) -> set[Path]:
    """Those of ``paths`` that git ignores (so a clone lacks them); none where git is not there."""
    git = shutil.which("git")
    if not git or not (ROOT / ".git").exists() or not paths:
        return set()
    done = subprocess.run([git, "check-ignore", "--stdin"], cwd=ROOT, capture_output=True, text=True,
                          input="\n".join(str(p.relative_to(ROOT)) for p in paths))
    return {ROOT / line for line in done.stdout.splitlines()}


def test_every_relative_link_resolves_to_a_file_a_clone_has():
    links = {(page, target, (page.parent / target).resolve()) for page in PAGES for target in relative_links(page)}
    inside = [path for _, _, path in links if path.is_relative_to(ROOT)]
    lost = ignored(inside)
    broken = sorted(f"{page.relative_to(ROOT)}: {target}" for page, target, path in links
                    if not path.exists() or path in lost)
    assert len(links) > 50 and not broken, broken


def test_the_quoted_list_of_known_estimators_is_the_registrys():
    known = ", ".join(sorted(p.kind for p in Registry(load_external=False).plugins("estimator")))
    quoted = [(page.name, m[1]) for page in PAGES
              for m in re.finditer(r"unknown estimator kind '[^']*'; known: ([\w, ]+)", page.read_text())]
    assert quoted and all(listed == known for _, listed in quoted), (known, quoted)
