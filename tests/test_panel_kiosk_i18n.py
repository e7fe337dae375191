"""The visitor screen (bilingual, address-gated) and the panel's two languages."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from gate.server import i18n
from gate.server.routers.kiosk import bilingual
from tests.panel_support import client_for, make_app

SERVER = Path(i18n.__file__).parent


def test_kiosk_is_only_served_to_kiosk_addresses(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path, kiosk_addresses=["10.0.0.9", "0:0:0:0:0:0:0:1"])
    assert client_for(app, host="10.0.0.9").get("/kiosk").status_code == 200
    assert client_for(app, host="::1").get("/kiosk").status_code == 200  # addresses, not text
    for host in ("10.0.0.5", "127.0.0.1"):
        assert client_for(app, host=host).get("/kiosk").status_code == 403
        assert client_for(app, host=host).get("/kiosk/events").status_code == 403
    # The kiosk's own address, but relayed by a proxy for someone else: refused.
    relayed = client_for(app, host="10.0.0.9")
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        assert relayed.get("/kiosk", headers={header: "203.0.113.5"}).status_code == 403


def test_kiosk_shows_vietnamese_first_then_english(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    runtime.state["prompt"] = "pull_mask_up"
    page = client_for(app, host="127.0.0.1").get("/kiosk").text
    vi = page.index('id="prompt-vi" lang="vi">Vui lòng kéo khẩu trang lên che kín mũi và miệng<')
    en = page.index('id="prompt-en" lang="en">Please pull your mask up over your nose and mouth<')
    assert vi < en
    prompts = bilingual()
    assert prompts["wear_mask"] == ("Vui lòng đeo khẩu trang", "Please wear your mask")
    assert prompts["wait_full"] == ("Vui lòng chờ (bên trong đã đủ người)", "Please wait (full)")
    assert prompts["idle"] == ("Mời bước tới", "Please step up")
    assert prompts["enter"] == ("Mời vào", "Please enter")
    assert prompts["sanitize"] == ("Vui lòng sát khuẩn tay", "Please sanitize your hands")


def test_unknown_prompt_falls_back_to_step_up(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    runtime.state["prompt"] = "<script>"
    page = client_for(app, host="127.0.0.1").get("/kiosk").text
    assert "Mời bước tới" in page and "<script>" not in page.split("</script>", 1)[1]


def test_every_page_text_has_a_vietnamese_translation() -> None:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {"_": None, "N_": None}
    found = {
        message
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(SERVER), method_map, keywords=keywords
        )
    }
    assert {"Unlock once", "Please wear your mask", "Export CSV"} <= found  # both extractors ran
    with open(i18n.LOCALE_DIR / "vi/LC_MESSAGES/messages.po", "rb") as handle:
        catalog = read_po(handle)
    translated = {m.id for m in catalog if m.id and m.string and "fuzzy" not in m.flags}
    missing = sorted(str(m) for m in found if m not in translated)
    assert not missing, f"untranslated (see gate/server/i18n.py): {missing}"
    assert "Vui lòng đeo khẩu trang" in {m.string for m in catalog}


def test_compiled_catalogs_match_their_sources() -> None:
    for lang in i18n.LANGUAGES:
        folder = i18n.LOCALE_DIR / lang / "LC_MESSAGES"
        with open(folder / "messages.po", "rb") as po, open(folder / "messages.mo", "rb") as mo:
            source = {m.id: m.string for m in read_po(po) if m.id and m.string}
            compiled = {m.id: m.string for m in read_mo(mo) if m.id}
        assert compiled == source, f"{lang}: run pybabel compile -d locale"


def test_vietnamese_by_default_english_on_request_remembered(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app, "manager")
    page = client.get("/entries").text
    assert '<html lang="vi">' in page and "Lượt vào" in page and "Xuất CSV" in page
    client.post(
        "/lang",
        data={"lang": "en", "next": "/entries", "csrf_token": client.headers["x-csrf-token"]},
    )
    page = client.get("/stats").text
    assert '<html lang="en">' in page and "Entries per hour" in page
    client.post("/lang", data={"lang": "xx", "csrf_token": client.headers["x-csrf-token"]})
    assert '<html lang="en">' in client.get("/stats").text
    assert "Giờ theo múi giờ Asia/Ho_Chi_Minh" in client_for(app, "admin").get("/admin/users").text
