"""Captions of digit images: prompt templates, a training set and a held-out set.

The held-out templates stand in for Parti-Prompts / MS-COCO captions: sentence frames the encoders and the U-Net
never saw, some paraphrased ("a sketch of the numeral seven"), some with distractor words ("..., drawn in blue ink
on a crumpled page").  Both sets name the digit by the same words (``zero`` .. ``nine``) or numerals (``0`` ..
``9``): a caption with neither says nothing about the digit.
"""
from __future__ import annotations

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_prompts(n: int) -> tuple[str, ...]:
    """The prompts of prompted rows and searches: image ``i`` gets "a handwritten <digit i mod 10>"."""
    return tuple(f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(int(n)))

TRAIN_TEMPLATES = (
    "a handwritten {word}",
    "the digit {num}",
    "a drawing of the number {word}",
    "the number {num}",
    "a handwritten digit {num}",
    "an image of the digit {word}",
    "a photo of a {word}",
    "the digit {word}",
    "a small grey {word}",
    "{word}",
    "{num}",
    "a scan of a handwritten {num}",
    "a picture of the number {num}",
    "a {word} written by hand",
    "a white {word} on a black background",
    "a digit: {word}",
)

HELDOUT_TEMPLATES = (
    "a sketch of the numeral {word}",
    "someone wrote the number {num} on paper",
    "a blurry picture showing the digit {word}, drawn in blue ink",
    "the handwritten numeral {num}",
    "a {word} scribbled with a pencil",
    "a low resolution image of a {num}",
    "an old postal code digit, a {word}",
    "a tiny pixelated {word} on a crumpled page",
)

TEMPLATE_SETS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}


def caption(digit: int, template: str) -> str:
    return template.format(word=DIGIT_WORDS[digit], num=str(digit))


def captions_for(digits, split: str = "train", offset: int = 0) -> list[str]:
    """One caption per digit label: template ``(offset + i) % T`` of ``split`` for label ``i``."""
    templates = TEMPLATE_SETS[split]
    return [caption(int(d), templates[(offset + i) % len(templates)]) for i, d in enumerate(digits)]


def prompt_set(n: int, split: str = "heldout") -> tuple[list[str], list[int]]:
    """``n`` prompts and their digits: prompt ``i`` asks for digit ``i % 10`` in template ``(i // 10) % T``."""
    templates = TEMPLATE_SETS[split]
    digits = [i % 10 for i in range(n)]
    return [caption(d, templates[(i // 10) % len(templates)]) for i, d in enumerate(digits)], digits
