"""The Russian analysis of alias words, kept on disk between crawl processes.

Compiling an OrgMatcher asks pymorphy3 for every form of every Cyrillic alias word (see
``OrgMatcher._base_stem``). Loading pymorphy3's dictionaries costs a crawl process ~19 MiB, of
which only ~11 MiB come back once released (bench/README.md). The analysis of a word depends
only on the word and on the versions of pymorphy3, its Russian dictionaries and PyStemmer, so it
is kept in one small JSON file (``morphology.json`` in the cache directory): the first process
to compile a matcher writes it (a temporary file, then ``os.replace``), later ones read it and
never import pymorphy3. A missing, stale, unreadable or corrupt file only means analysing as
without it; failing to write it is not an error either.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from loguru import logger

from crawler.matching import Analysis, russian_analysis

__all__ = ["FILE_NAME", "FORMAT", "MorphologyCache", "versions"]

FILE_NAME = "morphology.json"
# Bump when what russian_analysis returns for a word changes for the same library versions.
FORMAT = 1
MAX_WORDS = 50_000  # far beyond any catalogue; a file that grew past it starts again
LIBRARIES = ("pymorphy3", "pymorphy3-dicts-ru", "PyStemmer")


def versions() -> dict[str, Any] | None:
    """What an analysis depends on besides the word; None when a library's version is unknown
    (then nothing is cached)."""
    try:
        found: dict[str, Any] = {name: metadata.version(name) for name in LIBRARIES}
    except metadata.PackageNotFoundError:
        return None
    return {"format": FORMAT, **found}


class MorphologyCache:
    """Word → :data:`Analysis`, from ``directory / FILE_NAME`` when it was written with the same
    versions, else from pymorphy3 (and then saved by :meth:`save`). ``directory`` None: no file."""

    def __init__(self, directory: str | Path | None) -> None:
        self._versions = versions()
        self.path = Path(directory) / FILE_NAME if directory and self._versions else None
        self._words = self._read()
        self._new: dict[str, Analysis] = {}  # analysed since the file was read or written
        self._stemmer: Any = None
        self.missed = 0  # words analysed with pymorphy3 (not found in the file)

    def analyse(self, word: str) -> Analysis:
        """The analysis of a lower-cased Cyrillic word (as ``russian_analysis``)."""
        found = self._words.get(word)
        if found is None:
            if self._stemmer is None:
                import Stemmer

                self._stemmer = Stemmer.Stemmer("russian")
            found = self._words[word] = self._new[word] = russian_analysis(word, self._stemmer)
            self.missed += 1
        return found

    def save(self) -> None:
        """Write the words analysed since the file was read, merged with the file as it is now
        (another process may have written it meanwhile); never raises for an unwritable place."""
        if self.path is None or not self._new:
            return
        words = {**self._read(), **self._new}
        if len(words) > MAX_WORDS:
            words = dict(self._new)
        document = {"versions": self._versions,
                    "words": {word: [stem, list(forms)] for word, (stem, forms) in words.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".morphology-", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.debug("the morphology cache {} was not written: {}", self.path, exc)
            return
        self._new.clear()

    def _read(self) -> dict[str, Analysis]:
        """The file's words; empty when it is missing, unreadable, corrupt or of other versions."""
        if self.path is None:
            return {}
        try:
            with self.path.open(encoding="utf-8") as source:
                document = json.load(source)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            logger.debug("the morphology cache {} is unreadable: {}", self.path, exc)
            return {}
        words = _valid_words(document, self._versions)
        if words is None:
            logger.debug("the morphology cache {} is stale or malformed: analysing again", self.path)
            return {}
        return words


def _valid_words(document: Any, expected: dict[str, Any] | None) -> dict[str, Analysis] | None:
    """The words of a parsed file, or None unless it is well-formed and of ``expected`` versions."""
    if not isinstance(document, dict) or document.get("versions") != expected:
        return None
    words = document.get("words")
    if not isinstance(words, dict):
        return None
    result: dict[str, Analysis] = {}
    for word, value in words.items():
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], list) and all(isinstance(form, str) for form in value[1])):
            return None
        result[word] = (value[0], tuple(value[1]))
    return result
