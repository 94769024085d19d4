"""The README's and docs' relative links lead to a file, and to a heading of it
where they name one: findings move between the two, and a moved section must
not leave a link behind."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page: pathlib.Path) -> set[str]:
  """GitHub's anchors of a page's headings (outside code blocks): lower case,
  punctuation dropped, spaces as hyphens, repeats numbered."""
  found, seen, in_code = set(), {}, False
  for line in page.read_text().splitlines():
    if line.startswith("```"):
      in_code = not in_code
    heading = None if in_code else re.match(r"#+ (.*)", line)
    if heading:
      slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
      count = seen.get(slug, 0)
      seen[slug] = count + 1
      found.add(slug if count == 0 else f"{slug}-{count}")
  return found


def broken_links(page: pathlib.Path) -> list[str]:
  broken = []
  for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
    if re.match(r"[a-z]+:", link):  # https:, mailto:
      continue
    path, _, anchor = link.partition("#")
    target = (page.parent / path) if path else page
    if not target.exists():
      broken.append(f"{link}: no such file")
    elif anchor and target.suffix == ".md" and anchor not in anchors(target):
      broken.append(f"{link}: no such heading")
  return broken


def test_anchors_follow_githubs_rules(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# Speed\n## The runner's XLA settings\n```\n# not a heading\n```\n## Speed\n")
  assert anchors(page) == {"speed", "the-runners-xla-settings", "speed-1"}
  links = tmp_path / "links.md"
  links.write_text("# Links\n[a](page.md#speed-1) [b](page.md#nope) [c](#links) [d](#nope)"
                   " [e](missing.md) [f](https://x.org/#y)")
  assert broken_links(links) == ["page.md#nope: no such heading", "#nope: no such heading",
                                 "missing.md: no such file"]


def test_every_relative_link_resolves():
  assert len(PAGES) > 5
  broken = {page.name: links for page in PAGES if (links := broken_links(page))}
  assert not broken
