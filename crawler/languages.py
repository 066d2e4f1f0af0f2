"""Which language a text is in, for language-scoped aliases: the item's language checked by letters.

Cheap on purpose (a few ``str.count`` calls, run only when a language-scoped alias was found):
the decisions that matter are between languages that share a script — Ukrainian, Kazakh and
Russian in Cyrillic; Azerbaijani and English in Latin — and each of them has letters of its own.
"""

from __future__ import annotations

_UKRAINIAN = "ієїґІЄЇҐ"  # і also Kazakh (and Belarusian): Kazakh letters are checked first
_KAZAKH = "әғқңөұүһӘҒҚҢӨҰҮҺ"
_RUSSIAN = "ыэъёЫЭЪЁ"
_AZERBAIJANI = "əƏ"
_TURKIC_LATIN = "ğışçöüĞİŞÇÖÜ"
_APOSTROPHES = ("'є", "'ї", "'я", "'ю", "’є", "’ї", "’я", "’ю", "ʼє", "ʼї", "ʼя", "ʼю")
CYRILLIC_LANGUAGES = frozenset({"ru", "uk", "kk", "be", "ky", "tg", "mn", "bg", "sr"})


def _count(text: str, letters: str) -> int:
    return sum(text.count(letter) for letter in letters)


def _cyrillic_share(text: str) -> float:
    sample = text[:4000]
    cyrillic = sum(1 for char in sample if "\u0400" <= char <= "\u04ff")
    latin = sum(1 for char in sample if char.isascii() and char.isalpha())
    return cyrillic / (cyrillic + latin) if cyrillic + latin else 0.0


def normalise_language(code: str | None) -> str | None:
    """``"ru-RU"`` → ``"ru"``; empty → None."""
    if not code:
        return None
    return code.replace("_", "-").split("-")[0].lower() or None


def text_language(text: str, declared: str | None = None) -> str:
    """The language of ``text``: the declared one unless its letters say otherwise.

    Cyrillic text with Kazakh letters (ә ғ қ ң ө ұ ү һ) is Kazakh; with Ukrainian letters
    (і ї є ґ, apostrophe before я ю є ї) and no Russian-only ones (ы э ъ ё) to match, it is
    Ukrainian; otherwise Russian (or the declared Cyrillic language). Latin text with ə is
    Azerbaijani; otherwise the declared language, else English (Azerbaijani when ğ ı ş ç ö ü
    are frequent).
    """
    declared = normalise_language(declared)
    if _cyrillic_share(text) >= 0.5:
        kazakh, ukrainian, russian = _count(text, _KAZAKH), _count(text, _UKRAINIAN), _count(text, _RUSSIAN)
        ukrainian += sum(text.count(form) for form in _APOSTROPHES) * 3
        if kazakh and kazakh * 3 >= russian:
            return "kk"
        if ukrainian > russian:
            return "uk"
        if declared in CYRILLIC_LANGUAGES and declared not in ("kk", "uk"):
            return declared
        return "ru"
    if _count(text, _AZERBAIJANI):
        return "az"
    if declared and declared not in CYRILLIC_LANGUAGES:
        return declared
    # No ə, no declared language: Turkic letters still say Azerbaijani rather than English.
    return "az" if _count(text, _TURKIC_LATIN) * 30 > len(text) else "en"
