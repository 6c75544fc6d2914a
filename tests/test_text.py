"""The control-character check every service applies to labels and names."""
import pytest

from qrtrack.text import has_control_characters


@pytest.mark.parametrize("value", ["nul\x00", "bell\x07", "esc\x1b[0m", "del\x7f", "c1\x9f"])
def test_control_characters_are_found(value):
    assert has_control_characters(value)


@pytest.mark.parametrize("value", ["Summer promo", "tab\tand\nnewline", "Café ✓", "nbsp\u00a0", "nel\x85"])
def test_text_and_the_whitespace_split_removes_pass(value):
    assert not has_control_characters(value)
