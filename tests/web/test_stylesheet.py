"""qrtrack/static/app.css: the colour pairs text is drawn in meet WCAG AA's 4.5:1, in both themes."""
from __future__ import annotations

import re

import pytest

from ..conftest import PROJECT_ROOT

STYLESHEET = (PROJECT_ROOT / "qrtrack" / "static" / "app.css").read_text()
# (text colour, background) as the stylesheet pairs them: body text, muted notes, links and buttons, the soft
# badges and flashes (Active, GET, 2xx, errors, warnings).
PAIRS = [("text", "bg"), ("text", "surface"), ("text", "surface-2"), ("muted", "bg"), ("muted", "surface"),
         ("accent", "surface"), ("accent", "accent-soft"), ("accent-text", "accent"), ("danger", "surface"),
         ("danger", "danger-soft"), ("ok", "surface"), ("ok", "ok-soft"), ("warn", "surface"), ("warn", "warn-soft")]


def theme_colours(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z0-9-]+):\s*(#[0-9a-f]{6})", block))


def themes() -> dict[str, dict[str, str]]:
    light_block = STYLESHEET[STYLESHEET.index(":root {"):]
    light = theme_colours(light_block[:light_block.index("}")])
    dark_block = STYLESHEET[STYLESHEET.index("@media (prefers-color-scheme: dark)"):]
    dark = {**light, **theme_colours(dark_block[:dark_block.index("}")])}
    return {"light": light, "dark": dark}


def relative_luminance(colour: str) -> float:
    channels = [int(colour[index:index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4 for value in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("text", "background"), PAIRS)
def test_text_colours_meet_wcag_aa_on_their_backgrounds(theme, text, background):
    """A browser probe measured the green badges at 4.46:1 in the light theme."""
    colours = themes()[theme]
    assert contrast(colours[text], colours[background]) >= 4.5, (theme, text, background)


def test_the_contrast_formula_gives_the_known_extremes():
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
