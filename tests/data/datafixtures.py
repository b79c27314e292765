"""Helpers for the data-tool tests: small synthetic corpora, built offline, seeded, and a fake registry.

Every source of the demo gets a handful of documents in a style that matters to its recipes: clean prose from a
small vocabulary (all of it in the test lexicon), spam in capitals with symbols, archaic "folio" spelling outside the
lexicon, code full of symbols. Nothing here touches the network.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from pathlib import Path

from proxyrank_lab.data.corpora import SOURCES
from proxyrank_lab.data.documents import Document

_VOCAB_TEXT = ("the people of this nation have built a government that serves them well and the river runs past old "
         "houses where children read books about history science music and art every morning before school while "
         "their parents work in fields shops offices and factories across green valleys under bright summer skies "
         "many families gather to share food stories and songs near warm fires during long winter evenings")
_ARCHAIC_TEXT = "vnto thee thou hath doth whilst haue loue giue vpon selfe heere owne mee"
VOCAB = tuple(_VOCAB_TEXT.split())
ARCHAIC = tuple(_ARCHAIC_TEXT.split())
CODE_LINES = ("def f(x): return {'a': [x, x ** 2]}", "for i in range(10): print(i, i % 3 == 0)",
              "class A(B): pass  # noqa", "if x[0] != y[-1]: raise ValueError(f'{x!r}')")


def sentence(rng: random.Random, words: Sequence[str] = VOCAB, n: tuple[int, int] = (8, 16)) -> str:
    ws = [rng.choice(words) for _ in range(rng.randint(*n))]
    return " ".join(ws).capitalize() + "."


def prose(rng: random.Random, sentences: int = 12) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def style_text(style: str, rng: random.Random) -> str:
    if style == "prose":
        return prose(rng)
    if style == "spam":
        return " ".join(sentence(rng).upper() + " $$$ !!! CLICK >>> http://x.example/?a=1&b=2" for _ in range(6))
    if style == "archaic":
        return " ".join(sentence(rng, VOCAB[:10] + ARCHAIC * 3) for _ in range(12))
    if style == "code":
        return "\n".join(f"{rng.choice(CODE_LINES)}  # {rng.randrange(10**9)}" for _ in range(25))
    if style == "short":
        return sentence(rng)
    raise ValueError(style)


STYLES = {"email-spam": "spam", "shakespeare-folio": "archaic", "python-code": "code"}


def make_docs(source: str, n: int, seed: int = 0, style: str | None = None) -> list[Document]:
    rng = random.Random(f"{seed}:{source}")
    st = style or STYLES.get(source, "prose")
    return [Document(source, f"{source}-{i:04d}", style_text(st, rng)) for i in range(n)]


def demo_corpus_docs(n: int = 60) -> dict[str, list[Document]]:
    """Documents for every demo source."""
    return {name: make_docs(name, n) for name in SOURCES}


class FakeRegistry:
    """Stands in for apt-get / dpkg-deb / npm / pip: records calls and writes small files instead of downloading."""

    def __init__(self, files: dict[str, dict[str, str]] | None = None, fail: set[str] | None = None) -> None:
        self.files = files or {}  # package name -> {relative path in the tree: text}
        self.fail = fail or set()
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[0] == "apt-get":
            names = [c for c in cmd[2:] if not c.startswith("-") and c != "APT::Sandbox::User=root"]
            bad = [n for n in names if n in self.fail]
            if bad:
                return subprocess.CompletedProcess(cmd, 100, "", f"E: Unable to locate package {bad[0]}")
            for name in names:
                (cwd / f"{name}_1.0-1_all.deb").write_bytes(f"deb:{name}".encode())
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[0] == "dpkg-deb":
            archive, tree = Path(cmd[2]), Path(cmd[3])
            for rel, text in self.files.get(archive.name.split("_")[0], {}).items():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_text(text)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", f"unexpected command {cmd}")
