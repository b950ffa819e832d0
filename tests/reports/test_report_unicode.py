# ruff: noqa: RUF001 - the names are meant in Cyrillic, Greek and CJK
"""The PDF report in any script a customer or app is named in: Greek, Cyrillic, Chinese, Japanese, Korean and emoji
render with the fonts shipped in the package (DejaVu Sans, Droid Sans Fallback for CJK); a character neither font
draws becomes U+FFFD, never a crash or a silent '?'. The text is read back with pypdfium2 and the page rendered to
PNG (REPORT_PNG_DIR/unicode-report.png when that is set, to look at)."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pypdfium2 as pdfium

from shared.customer_report import CustomerReport, lines_of, printable, render_pdf
from shared.expiry_warnings import DEFAULT_THRESHOLDS
from tests.warnings.test_rules import NOW, T, cred

NAMES = {
    "greek": "Λογιστήριο Αθηνών",
    "cyrillic": "Бухгалтерия Москва",
    "chinese": "北京会计事务所",
    "japanese": "東京バックアップ",
    "korean": "서울 백업 커넥터",
    "emoji": "Backup 😀 sync",
}


def pdf_of(customer: str, names: list[str], secret: str = "秘密") -> bytes:
    rows = [replace(cred(10 + i, key=f"{i:08d}-0000-4000-8000-000000000000", app=f"app-{i}"), display_name=name,
                    owners=(f"владелец{i}@contoso.com",), credential_name=f"{secret} {i}")
            for i, name in enumerate(names)]
    report = CustomerReport(T, customer, NOW - timedelta(days=30), NOW,
                            lines_of(rows, [], DEFAULT_THRESHOLDS, NOW), (), ())
    return render_pdf(report)


def text_of(data: bytes) -> str:
    doc = pdfium.PdfDocument(io.BytesIO(data))
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_every_script_a_customer_is_named_in_renders_and_reads_back() -> None:
    data = pdf_of("Ελληνική Εταιρεία — 株式会社", list(NAMES.values()))
    text = text_of(data)
    assert "Ελληνική Εταιρεία — 株式会社" in text
    for script, name in NAMES.items():
        assert name in text, script
    assert "владелец0@contoso.com" in text and "秘密 1" in text
    doc = pdfium.PdfDocument(io.BytesIO(data))
    fonts = {f.decode() for f in data.split(b"/BaseFont /")[1:] for f in [f.split(b"\n")[0].split(b" ")[0]]}
    assert any("DejaVu" in f for f in fonts) and any("Droid" in f for f in fonts) and any("Nanum" in f for f in fonts)
    image = doc[0].render(scale=1.5).to_pil()
    assert image.size[0] > 1000
    if os.environ.get("REPORT_PNG_DIR"):
        image.save(Path(os.environ["REPORT_PNG_DIR"]) / "unicode-report.png")


def test_a_latin_only_report_does_not_load_the_cjk_fallback() -> None:
    data = pdf_of("Contoso", ["Backup connector", "Ελληνικά"], secret="nightly")
    assert b"Droid" not in data and b"Nanum" not in data and "Ελληνικά" in text_of(data)


def test_a_character_no_font_draws_becomes_the_replacement_character_not_a_crash() -> None:
    assert printable("Rocket 🚀 ok")[0] == "Rocket \ufffd ok"
    assert printable("thumbs 👍🏽 done") == ("thumbs \ufffd\ufffd done", frozenset())
    assert "\ufffd" not in printable("\u200d\ufe0f")[0]  # joiners and selectors of emoji sequences: never a box
    assert printable("line\nbreak\ttab")[0] == "line break tab"
    assert printable("中文") == ("中文", {"DroidFallback"}) and printable("서울") == ("서울", {"Nanum"})
    data = pdf_of("Rocket 🚀 Ltd", ["👩‍💻 dev app"])
    assert "Rocket \ufffd Ltd" in text_of(data)
