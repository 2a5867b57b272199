"""Personal concepts on the page (issue 25), in a real headless Chromium over one real served store: teach a concept
from a selection, ✓/✗ on the results (a click, and ``y``/``n`` on the focused card) refit it server-side and the
results follow the API's new ranking, the Concepts panel lists it with its member count, shows its members,
renames and forgets it; screenshots at two widths, axe-core and the CSP.

Set ``CLIPDEX_WEB_SHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.axe import serious_violations
from tests.test_web_views import WIDTHS, Served, axe, browser, open_page, served, shot, shown, wait  # noqa: F401

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def api_order(store: Served, **params: str) -> list[str]:
    return [r["path"] for r in store.http.get("/api/search", params={"limit": 10, **params}).json()]


def card(driver: webdriver.Chrome, path: str):  # noqa: ANN201
    return next(c for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")
                if c.get_attribute("data-path") == path)


def answers(driver: webdriver.Chrome) -> str | None:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-concept-answers")


def panel_rows(driver: webdriver.Chrome) -> dict[str, str]:
    return dict(driver.execute_script(
        "return [...document.querySelectorAll('#concept-list tr.concept')].map(r => [r.dataset.name, "
        "(r.querySelector('.num') || {}).textContent])"))


@pytest.mark.parametrize("width", WIDTHS)
def test_teach_mark_rename_and_forget_a_concept(served: Served, browser: webdriver.Chrome, axe: str,  # noqa: F811
                                               tmp_path: Path, width: int):
    driver = browser
    name, renamed = f"shoe's {width}", f"footwear {width}"
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
    driver.get_log("browser")  # (drop what came before)
    open_page(driver, served.url + "/#search", width)
    driver.find_element(By.ID, "q").send_keys("a photo", Keys.ENTER)
    first = api_order(served, q="a photo")
    wait(driver, lambda d: shown(d, "#results .card") == first, "no results")
    assert not driver.find_elements(By.CSS_SELECTOR, "#results .card-action")  # no concept active: no ✓/✗

    # teach from a selection of two results
    for path in first[:2]:
        card(driver, path).find_element(By.CSS_SELECTOR, ".pick").click()
    driver.find_element(By.ID, "sel-teach").click()
    driver.find_element(By.ID, "teach-name").send_keys(name, Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.ID, "concept-bar").is_displayed()
         and d.find_elements(By.CSS_SELECTOR, "#results .card-action"), "the concept never became active")
    taught = served.http.get(f"/api/concepts/{name}").json()
    assert sorted(taught["examples"]) == sorted(first[:2]) and taught["non_examples"] == []
    ranked = api_order(served, q="a photo", concept=name)
    wait(driver, lambda d: shown(d, "#results .card") == ranked, "results not ranked by the concept")
    assert driver.find_element(By.ID, "concept-name").text == name
    assert not driver.find_element(By.ID, "selection-bar").is_displayed()
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
    assert all([a.text for a in c.find_elements(By.CSS_SELECTOR, ".card-action")] == ["✓", "✗"] for c in cards)
    yes_css = "#results .card:has([data-action=concept-yes][aria-pressed=true])"
    assert sorted(shown(driver, yes_css)) == sorted(first[:2])  # the examples show as answered

    # ✓ on a card that is not an example yet: answered, refit, the results searched again
    yes = next(p for p in ranked if p not in first[:2])
    card(driver, yes).find_element(By.CSS_SELECTOR, "[data-action=concept-yes]").click()
    wait(driver, lambda d: answers(d) == "1", "the ✓ never finished")
    after_yes = served.http.get(f"/api/concepts/{name}").json()
    assert yes in after_yes["examples"]
    ranked = api_order(served, q="a photo", concept=name)
    wait(driver, lambda d: shown(d, "#results .card") == ranked, "results not refreshed after ✓")
    assert card(driver, yes).find_element(By.CSS_SELECTOR, "[data-action=concept-yes]").get_attribute(
        "aria-pressed") == "true"
    assert f"{after_yes['members']} member" in driver.find_element(By.ID, "concept-state").text

    # n on the focused card (one keystroke): a non-example
    no = next(p for p in reversed(ranked) if p not in after_yes["examples"])
    focused = card(driver, no).find_element(By.CSS_SELECTOR, ".thumb")
    driver.execute_script("arguments[0].focus()", focused)
    focused.send_keys("n")
    wait(driver, lambda d: answers(d) == "2", "n never marked the focused card")
    after_no = served.http.get(f"/api/concepts/{name}").json()
    assert no in after_no["non_examples"] and no not in after_no["examples"]
    ranked = api_order(served, q="a photo", concept=name)
    wait(driver, lambda d: shown(d, "#results .card") == ranked, "results not refreshed after n")
    assert card(driver, no).find_element(By.CSS_SELECTOR, "[data-action=concept-no]").get_attribute(
        "aria-pressed") == "true"
    assert driver.execute_script("return document.activeElement.closest('.card').dataset.path") == no
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"concept-results-{width}")

    # the viewer: "Not NAME" answers for the photo shown
    other = next(p for p in ranked if p not in after_no["examples"] + after_no["non_examples"])
    card(driver, other).find_element(By.CSS_SELECTOR, ".thumb").click()
    wait(driver, lambda d: d.find_element(By.ID, "viewer-concept").is_displayed(), "no concept buttons in the viewer")
    assert driver.find_element(By.ID, "viewer-concept-yes").text == f"Add to {name}"
    driver.find_element(By.ID, "viewer-concept-no").click()
    wait(driver, lambda d: answers(d) == "3", "the viewer's answer never finished")
    assert other in served.http.get(f"/api/concepts/{name}").json()["non_examples"]
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(driver, lambda d: not d.find_element(By.ID, "viewer").is_displayed(), "the viewer never closed")

    # the panel: its member count; members; rename; forget
    driver.find_element(By.ID, "tab-concepts").click()
    wait(driver, lambda d: name in panel_rows(d), "the panel never listed the concept")
    assert panel_rows(driver)[name] == f"{served.http.get(f'/api/concepts/{name}').json()['members']:,}"
    assert serious_violations(driver, axe) == []
    shot(driver, tmp_path, f"concepts-panel-{width}")
    row = driver.find_element(By.CSS_SELECTOR, "#concept-list tr.concept")
    row.find_element(By.XPATH, ".//button[text()='members']").click()
    members = api_order(served, q="a photo", in_concept=name)  # the query stays; the concept filters
    assert members and set(members) <= set(served.http.get(f"/api/concepts/{name}/members").json()["paths"])
    wait(driver, lambda d: shown(d, "#results .card") == members, "the members never showed")
    assert not driver.find_elements(By.CSS_SELECTOR, "#results .card-action")  # members: no ✓/✗

    driver.find_element(By.ID, "tab-concepts").click()
    wait(driver, lambda d: name in panel_rows(d), "the panel never came back")
    row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#concept-list tr.concept")
               if r.get_attribute("data-name") == name)
    row.find_element(By.XPATH, ".//button[text()='rename']").click()
    box = driver.find_element(By.ID, "concept-rename-input")
    box.clear()
    box.send_keys(renamed, Keys.ENTER)
    wait(driver, lambda d: renamed in panel_rows(d) and name not in panel_rows(d), "the rename never showed")
    names = [c["name"] for c in served.http.get("/api/concepts").json()]
    assert renamed in names and name not in names

    row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#concept-list tr.concept")
               if r.get_attribute("data-name") == renamed)
    row.find_element(By.XPATH, ".//button[text()='forget']").click()
    driver.switch_to.alert.dismiss()  # the confirm: no, nothing forgotten
    assert renamed in panel_rows(driver)
    row.find_element(By.XPATH, ".//button[text()='forget']").click()
    driver.switch_to.alert.accept()
    wait(driver, lambda d: renamed not in panel_rows(d), "the concept never left the panel")
    assert served.http.get(f"/api/concepts/{renamed}").status_code == 404
    assert all(c["name"] != renamed for c in served.http.get("/api/concepts").json())
    items = served.http.get("/api/browse", params={"by": "date", "limit": 500}).json()["items"]
    assert not [r["path"] for r in items if renamed in (r.get("concepts") or [])]  # no payload left

    assert driver.execute_script("return window.__csp") == []
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                and "Content Security Policy" in e["message"]]
